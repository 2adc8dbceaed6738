# cli_resolve: `kdp resolve CLUSTER --from SRC NAME [--type T] [--json]`: resolve a
# name from a pod or node as its stub resolver would (dns.resolver), every query a
# packet through the emulator; prints like dig plus the queries it took. Exit
# status 0 when the name resolved, 1 when it did not (NXDOMAIN, NODATA, SERVFAIL,
# no response), 2 for bad input. Above the emulator, which builds on dns.
from __future__ import annotations

import json

from .cli_common import add_proxy_mode, load_emulator

QUERY_TYPES = ("A", "AAAA", "SRV", "PTR", "TXT", "CNAME", "SOA", "NS", "MX")


def add_parser(subparsers):
    import argparse
    r = subparsers.add_parser(
        "resolve", help="resolve a name from a pod or node, packet by packet, as its resolver would",
        description="Resolve NAME from a pod's or node's resolver (resolv.conf, search list, ndots:5), "
                    "every query a packet through the emulator; printed like dig.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="""examples:
  kdp resolve demo --from pod/default/client service-a.backend
  kdp resolve demo --from pod/default/client _http._tcp.service-a.backend --type SRV
  kdp resolve demo --from pod/default/client --type PTR 10.2.0.1 --hops

exit status: 0 resolved, 1 not (NXDOMAIN, NODATA, SERVFAIL, no response), 2 usage or input error""")
    r.add_argument("cluster", help="a YAML file, a directory of YAML files, or 'demo'")
    r.add_argument("--from", dest="src", required=True, metavar="pod/NS/NAME|node/NAME",
                   help="whose resolver asks (a pod uses the cluster DNS, a node the VNet's)")
    r.add_argument("name", help="the name to look up (an IPv4 address with --type PTR)")
    r.add_argument("--type", dest="qtype", type=str.upper, choices=QUERY_TYPES, default="A",
                   help="the query type (default A)")
    r.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    r.add_argument("--hops", action="store_true",
                   help="also print every query's packets hop by hop (as kdp trace's summary)")
    r.add_argument("--json", action="store_true", help="print the resolution as JSON")
    add_proxy_mode(r)
    r.set_defaults(func=cmd_resolve)
    return r


def cmd_resolve(a) -> int:
    from .dns.resolver import resolve
    emu = load_emulator(a.cluster, seed=a.seed, proxy_mode=a.proxy_mode)
    res = resolve(emu, a.src, a.name, a.qtype)
    if a.json:
        print(json.dumps(res.as_dict(hops=a.hops), indent=2))
    else:
        print(res.text())
        if a.hops:
            from .render import trace_text
            for i, q in enumerate(res.queries, 1):
                print(f"\n;; query {i}: {q.summary()}")
                for o in q.outcomes:
                    print(trace_text(o, "summary"))
    return 0 if res.ok else 1
