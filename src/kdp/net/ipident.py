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
# contents) and the bucket's draw key are keyed hashes of the seed, the
# namespace and the bucket, so the same seed gives the same IDs; a bucket's IDs
# depend on the packets to its destinations before them, as the kernel's do.
# Each advance (get_random_u32_below) is hash_step(draw key, jiffy) % elapsed:
# the splitmix step the compiled flow engine computes too, so a cached answer
# (kdp.datapath.flowcache) draws its ID in C from the bucket's slot.
from __future__ import annotations

from ..conntrack.keyed import hash_step, keyed_hash

IP_IDENTS_SZ = 2048          # buckets (the kernel's minimum table size)
HZ = 250                     # jiffies a second (CONFIG_HZ of the kernel the oracle runs)
_M32 = 0xFFFFFFFF


def jiffies(now: float) -> int:
    return int(now * HZ) & _M32


def draw(counter: int, tstamp: int, key: int, now: float, segs: int = 1) -> tuple[int, int, int]:
    """One ip_idents_reserve() on a bucket's state: (first ID, counter after,
    tstamp after). A use in a later jiffy first advances the counter by a draw
    below the jiffies elapsed. The compiled flow engine does the same (_ipid_draw)."""
    j, delta = jiffies(now), 0
    if j != tstamp:
        delta = hash_step(key, j) % ((j - tstamp) & _M32)
        tstamp = j
    ident = (counter + delta) & _M32
    return ident, (ident + segs) & _M32, tstamp


class IpIdents:
    """The ip_idents/ip_tstamps buckets of one namespace."""

    def __init__(self, seed: int, ns_name: str):
        self.seed, self.ns_name = seed, ns_name
        self._buckets: dict[int, list[int]] = {}     # bucket -> [counter, tstamp, draw key]
        self.changed: set[int] | None = None         # buckets used, noted for the flow cache
        self._bucket_of: dict[tuple, int] = {}       # (saddr, daddr, proto) -> bucket: a pure function

    def bucket(self, saddr, daddr, proto: int) -> int:
        """siphash_3u32(daddr, saddr, protocol, net's ip_id_key) & mask."""
        k = (saddr, daddr, proto)
        b = self._bucket_of.get(k)
        if b is None:
            b = self._bucket_of[k] = keyed_hash(self.seed, "ip-idents", self.ns_name, str(daddr),
                                                str(saddr), proto, seed_as_key=False) % IP_IDENTS_SZ
        return b

    def state(self, bucket: int) -> list[int]:
        """The bucket's [counter, tstamp, draw key], made on first use."""
        st = self._buckets.get(bucket)
        if st is None:
            start = keyed_hash(self.seed, "ip-idents-start", self.ns_name, bucket,
                               seed_as_key=False) & _M32
            key = keyed_hash(self.seed, "ip-idents-delta", self.ns_name, bucket, seed_as_key=False)
            st = self._buckets[bucket] = [start, 0, key]
        return st

    def reserve(self, bucket: int, now: float, segs: int = 1) -> int:
        """ip_idents_reserve(): the first of `segs` IDs (32-bit; the header keeps 16)."""
        st = self.state(bucket)
        if self.changed is not None:
            self.changed.add(bucket)
        ident, st[0], st[1] = draw(st[0], st[1], st[2], now, segs)
        return ident

    def select(self, saddr, daddr, proto: int, now: float) -> int:
        """__ip_select_ident(): the 16-bit IP ID of one packet saddr -> daddr."""
        return self.select_in(saddr, daddr, proto, now)[0]

    def select_in(self, saddr, daddr, proto: int, now: float) -> tuple[int, int]:
        """select(), and the bucket it drew from (a cached answer's IP ID slot)."""
        bucket = self.bucket(saddr, daddr, proto)
        return self.reserve(bucket, now) & 0xFFFF, bucket
