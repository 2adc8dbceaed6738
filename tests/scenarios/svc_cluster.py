# A two-node cluster with one Service of every kind and policy, for service scenarios.
#
#   ext clients -- edge (cloud LB 20.1.1.1, 20.1.1.2) -- underlay 10.240.0.0/16
#        n1 10.240.0.4: client, web-1                 n2 10.240.0.5: web-2, web-3, solo
from kdp.k8s import load_cluster_text

YAML = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: svc}
spec:
  networkPlugin: kubenet
  podCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/16
  dnsServiceIP: 10.96.0.10
  vnetSubnet: 10.240.0.0/16
  hairpinMode: HAIRPIN
  nodes: [{name: n1}, {name: n2}]
  kubeProxy: {conntrackMax: CTMAX}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: default, labels: {app: solo}}
spec: {nodeName: n2, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec: {type: NodePort, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: solo-local, namespace: default}
spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: solo},
       ports: [{name: http, port: 80, targetPort: http, nodePort: 30081}]}
---
apiVersion: v1
kind: Service
metadata: {name: solo-lb, namespace: default}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: solo},
       ports: [{name: http, port: 80, targetPort: http, nodePort: 30082}]}
status: {loadBalancer: {ingress: [{ip: 20.1.1.1}]}}
---
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: default}
spec: {type: LoadBalancer, selector: {app: web}, loadBalancerSourceRanges: [203.0.113.0/24],
       ports: [{name: http, port: 80, targetPort: http, nodePort: 30083}]}
status: {loadBalancer: {ingress: [{ip: 20.1.1.2}]}}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec: {selector: {app: nothing}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec: {selector: {app: web}, sessionAffinity: ClientIP, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: extip, namespace: default}
spec: {selector: {app: web}, externalIPs: [198.51.100.7], ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: solo-itp, namespace: default}
spec: {selector: {app: solo}, internalTrafficPolicy: Local, ports: [{name: http, port: 80, targetPort: http}]}
"""


def svc_cluster(hairpin: str = "hairpin-veth", conntrack_max: int = 131072):
    return load_cluster_text(YAML.replace("HAIRPIN", hairpin).replace("CTMAX", str(conntrack_max)),
                             file="svc_cluster.yaml")
