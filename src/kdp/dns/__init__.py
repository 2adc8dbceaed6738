# dns: the cluster's DNS as real packets: the DNS wire codec (wire), the zone
# CoreDNS serves from a Cluster plus the upstream (zone), DNS servers as socket
# apps (server), and a pod's or node's stub resolver sending its queries through
# the emulator (resolver). `kdp resolve` is kdp.cli_resolve.
