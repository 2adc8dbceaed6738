# dns_helpers: a small cluster for the DNS unit tests (YAML through the normal
# loader), and helpers to ask its CoreDNS / DNS server apps questions.
from __future__ import annotations

from kdp.dns import wire
from kdp.dns.server import CoreDnsApp
from kdp.dns.zone import CoreDNS
from kdp.k8s import load_cluster_text

UPSTREAM = """\
  dns:
    upstream:
      records:
      - {name: example.com, type: A, value: 93.184.216.34}
      - {name: example.com, type: TXT, value: "v=spf1 -all", ttl: 60}
      - {name: www.example.com, type: CNAME, value: example.com}
      - {name: mail.example.com, type: MX, value: "10 mx.example.com"}
      - {name: _sip._udp.example.com, type: SRV, value: "0 5 5060 sip.example.com"}
      - {name: 34.216.184.93.in-addr.arpa, type: PTR, value: example.com}
"""

CONFIG = """\
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: t}
spec:
  serviceCIDR: 10.2.0.0/24
  dnsServiceIP: 10.2.0.10
  nodes: [{name: n1}, {name: n2}, {name: n3}]
"""

OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: data}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: nginx, ports: [{name: http, containerPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: data, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers: [{name: pg, image: postgres, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: data, labels: {app: db}}
spec:
  hostname: db-1
  subdomain: db
  containers: [{name: pg, image: postgres, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-2, namespace: data, labels: {app: db}}
spec:
  containers: [{name: pg, image: postgres, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: sick, namespace: data, labels: {app: db}}
spec:
  containers: [{name: pg, image: postgres, ports: [{containerPort: 5432}]}]
status: {conditions: [{type: Ready, status: 'False'}]}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: data}
spec:
  clusterIP: None
  selector: {app: nothing}
  ports: [{name: pg, port: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: portless, namespace: data}
spec:
  clusterIP: None
  selector: {app: db}
---
apiVersion: v1
kind: Service
metadata: {name: search, namespace: default}
spec:
  type: ExternalName
  externalName: www.example.com
---
apiVersion: v1
kind: Service
metadata: {name: alias, namespace: default}
spec:
  type: ExternalName
  externalName: web.default.svc.cluster.local
---
apiVersion: v1
kind: Service
metadata: {name: nowhere, namespace: default}
spec:
  type: ExternalName
  externalName: nothing.example.org
"""


def cluster(upstream: bool = True, extra: str = ""):
    text = CONFIG + (UPSTREAM if upstream else "") + "---\n" + OBJECTS + extra
    return load_cluster_text(text, "dns.yaml")


def coredns(upstream: bool = True) -> CoreDNS:
    return CoreDNS(cluster(upstream))


def ask(app: CoreDnsApp, name: str, qtype="A", edns=None, ident=1) -> wire.Message:
    raw, _ = app.respond(wire.query(name, qtype, ident, edns=edns).encode(), tcp=False)
    return wire.decode(raw)


def data(rrs) -> list:
    return [rr.data for rr in rrs]
