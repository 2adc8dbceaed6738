# ingress: an ingress controller (ingress-nginx) as real packets: HTTP/1.1 on
# TCP (http), Ingress/IngressClass class selection, merging and matching (rules;
# the API objects and their decoding are k8s.ingressapi's), the controller app
# that proxies from its pod to the backend pods (controller), the HTTP app on
# backend pods (backend) and an HTTP client (client). `kdp http` is kdp.cli_http.
