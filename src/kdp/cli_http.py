# cli_http: `kdp http CLUSTER --from ext/ADDR|pod/NS/NAME|node/NAME --url
# http://HOST[:PORT]/PATH [--method M] [--header K:V]... [--data TEXT] [--json]`:
# one HTTP request as packets (ingress.client), printed like `curl -v` followed
# by the controller's routing decision and both TCP connections hop by hop.
# Exit status 0 when a response came back (whatever its status), 1 when none
# did, 2 for bad input. Above the emulator, which builds on ingress.
from __future__ import annotations

import json

from .cli_common import add_proxy_mode, load_emulator
from .errors import UsageError


def add_parser(subparsers):
    import argparse
    p = subparsers.add_parser(
        "http", help="make an HTTP request as packets (through the ingress controller for ingress hosts)",
        description="One HTTP/1.1 exchange as packets, printed like curl -v, then the ingress "
                    "controller's routing decision and both TCP connections.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  kdp http demo --from ext/198.51.100.20 --url http://shop.example.com/api/items
  kdp http demo --from pod/default/client --url http://shop.example.com/ --json
  kdp http demo --from ext/198.51.100.20 --url http://20.50.60.80/ -H 'Host: nope.example' --hops

exit status: 0 a response came back (whatever its status), 1 none did, 2 usage or input error""")
    p.add_argument("cluster", help="a YAML file, a directory of YAML files, or 'demo'")
    p.add_argument("--from", dest="src", required=True, metavar="ext/ADDR|pod/NS/NAME|node/NAME",
                   help="the client: an off-cluster host, a pod or a node")
    p.add_argument("--url", required=True, metavar="http://HOST[:PORT]/PATH",
                   help="what to request; an Ingress host goes to the controller's load balancer, "
                        "other names through the client's resolver")
    p.add_argument("--method", "-X", default="GET", type=str.upper, help="request method (default GET)")
    p.add_argument("--header", "-H", action="append", default=[], metavar="NAME:VALUE",
                   help="add a request header (repeatable; `Name:` with no value removes a default one)")
    p.add_argument("--data", "-d", default=None, help="request body (sets Content-Length)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--hops", action="store_true",
                   help="also print every packet hop by hop (as kdp trace's summary)")
    p.add_argument("--json", action="store_true", help="print the exchange as JSON")
    add_proxy_mode(p)
    p.set_defaults(func=cmd_http)
    return p


def _headers(items: list[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
            raise UsageError(f"--header {item!r}: expected NAME:VALUE")
        out.append((name.strip(), value.strip()))
    return out


def cmd_http(a) -> int:
    from .ingress.client import http_request
    emu = load_emulator(a.cluster, seed=a.seed, proxy_mode=a.proxy_mode)
    data = a.data.encode() if a.data is not None else None
    ex = http_request(emu, a.src, a.url, a.method, _headers(a.header), data)
    if a.json:
        print(json.dumps(ex.as_dict(hops=a.hops), indent=2))
    else:
        print(exchange_text(ex, hops=a.hops))
    return 0 if ex.ok else 1


def exchange_text(ex, hops: bool = False) -> str:
    lines = [f"* {ex.host} -> {ex.address} ({ex.how})"]
    if ex.resolution is not None:
        lines += [f"*   {q.summary()}" for q in ex.resolution.queries]
    lines.append(f"* connecting from {ex.source} ({ex.client[0]}:{ex.client[1]}) to {ex.address}:{ex.port}"
                 if ex.client else f"* connecting from {ex.source}")
    head, _, body = ex.request.raw.partition(b"\r\n\r\n")
    lines += ["> " + ln for ln in head.decode("latin-1").split("\r\n")] + [">"]
    if body:
        lines.append(body.decode("utf-8", errors="replace"))
    if len(ex.request_segments) > 1:
        lines.append(f"* request sent in {len(ex.request_segments)} segments "
                     f"({' + '.join(str(n) for n in ex.request_segments)} bytes)")
    if ex.response is not None:
        r = ex.response
        lines.append("< " + r.status_line)
        lines += [f"< {k}: {v}" for k, v in r.headers] + ["<"]
        text = r.body.decode("utf-8", errors="replace")
        lines.append(text.rstrip("\n"))
    else:
        lines.append(f"* no response: {ex.error}")
    for rec in ex.records:
        route = rec.route
        lines.append("")
        if route is not None:
            lines.append(f"* ingress: {route.why}")
        if rec.endpoint is not None:
            lines.append(f"* ingress: endpoint {rec.endpoint.ip}:{rec.endpoint.port} "
                         f"({rec.endpoint.pod or 'no pod'}) of {route.backend.describe()}")
        if rec.status is not None:
            lines.append(f"* ingress: answered {rec.status}" + (f" ({rec.error})" if rec.error else ""))
    for c in ex.connections:
        lines.append("")
        title = ("client connection" if c.name == "client" else "controller -> backend connection")
        lines.append(f"== {title}: {c.local} -> {c.remote}"
                     + (f" (served by {c.served_by})" if c.served_by else ""))
        lines += [f"   via: {v}" for v in c.via]
        lines += [f"   {i:>2}. {s.text()}" for i, s in enumerate(c.segments, 1)]
    if hops:
        from .render import trace_text
        for name, o in ex.steps:
            lines += ["", f"== packet: {name}", trace_text(o, "summary")]
    return "\n".join(lines)
