# net.ipident: one namespace's IP ID generator for packets not sent by a
# connected socket, as the kernel's __ip_select_ident()/ip_idents_reserve()
# (net/ipv4/route.c) draws them: (daddr, saddr, protocol) hash into one of
# IP_IDENTS_SZ buckets, each a counter and the jiffies of its last use; a use
# in a later jiffy first advances the counter by a random amount below the
# jiffies elapsed, then the packet takes the counter's value and it moves on by
# one. So consecutive packets to one destination differ (by 1 within a jiffy,
# by a little more later), as on a real node. Used for UDP datagrams from
# unconnected sockets (DF or not: this kernel hashes both), ICMP echo replies
# and every ICMP error (icmp_send, REJECT). Connected sockets keep their own
# inet_id counter (net.tcpstate); RSTs from no socket carry ID 0.
#
# Determinism: the bucket, each counter's start (the kernel's random boot
# contents) and each advance (get_random_u32_below) are keyed hashes of the
# seed, the namespace and the bucket (and the jiffy), so the same seed gives the
# same IDs; a bucket's IDs depend on the packets to its destinations before them,
# as the kernel's do.
from __future__ import annotations

from ..conntrack.keyed import keyed_hash

IP_IDENTS_SZ = 2048          # buckets (the kernel's minimum table size)
HZ = 250                     # jiffies a second (CONFIG_HZ of the kernel the oracle runs)
_M32 = 0xFFFFFFFF


def jiffies(now: float) -> int:
    return int(now * HZ) & _M32


class IpIdents:
    """The ip_idents/ip_tstamps buckets of one namespace."""

    def __init__(self, seed: int, ns_name: str):
        self.seed, self.ns_name = seed, ns_name
        self._buckets: dict[int, list[int]] = {}     # bucket -> [counter, tstamp]

    def bucket(self, saddr, daddr, proto: int) -> int:
        """siphash_3u32(daddr, saddr, protocol, net's ip_id_key) & mask."""
        return keyed_hash(self.seed, "ip-idents", self.ns_name, str(daddr), str(saddr), proto,
                          seed_as_key=False) % IP_IDENTS_SZ

    def reserve(self, bucket: int, now: float, segs: int = 1) -> int:
        """ip_idents_reserve(): the first of `segs` IDs (32-bit; the header keeps 16)."""
        st = self._buckets.get(bucket)
        if st is None:
            start = keyed_hash(self.seed, "ip-idents-start", self.ns_name, bucket,
                               seed_as_key=False) & _M32
            st = self._buckets[bucket] = [start, 0]
        j, delta = jiffies(now), 0
        if j != st[1]:
            span = (j - st[1]) & _M32
            delta = keyed_hash(self.seed, "ip-idents-delta", self.ns_name, bucket, j,
                               seed_as_key=False) % span
            st[1] = j
        ident = (st[0] + delta) & _M32
        st[0] = (ident + segs) & _M32
        return ident

    def select(self, saddr, daddr, proto: int, now: float) -> int:
        """__ip_select_ident(): the 16-bit IP ID of one packet saddr -> daddr."""
        return self.reserve(self.bucket(saddr, daddr, proto), now) & 0xFFFF
