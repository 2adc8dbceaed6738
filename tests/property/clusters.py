# Small hand-written clusters for the minimal examples of known kdp bugs and
# of kube-proxy's known exceptions (the properties themselves run on
# generated clusters).
#
#   azure CNI, two nodes          n1 10.240.0.4: client      n2 10.240.0.5: web
AZURE = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: az}
spec: {networkPlugin: azure, nodes: [{name: n1}, {name: n2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: n2, containers: [{name: web, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: web},
       ports: [{port: 80, nodePort: 30080}]}
"""

#   kubenet, two nodes            n1 10.240.0.4: client, web-1     n2 10.240.0.5: web-2
KUBENET = """
apiVersion: kdp.dev/v1alpha1
kind: ClusterConfig
metadata: {name: kn}
spec: {networkPlugin: kubenet, nodes: [{name: n1}, {name: n2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: web, ports: [{containerPort: 80, protocol: UDP}]}]}
"""

# a UDP NodePort service with externalTrafficPolicy Local over web-1 (add to KUBENET)
LOCAL_NODE_PORT = """
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: web},
       ports: [{port: 80, protocol: UDP, nodePort: 30053}]}
"""

# kubernetes/kubernetes#74383 (add to KUBENET + LOCAL_NODE_PORT): a TCP server on n1 behind a
# NodePort with externalTrafficPolicy Local; client (n1) calling n2's nodePort reaches it unSNATed
LOCAL_NODE_PORT_TCP = """
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: default, labels: {app: api}}
spec: {nodeName: n1, containers: [{name: api, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-local, namespace: default}
spec: {type: NodePort, externalTrafficPolicy: Local, selector: {app: api},
       ports: [{port: 8080, nodePort: 30080}]}
"""
