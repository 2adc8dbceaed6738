# conntrack.keyed.keyed_hash, the one keyed hash of kdp, in both its
# constructions: the values are pinned to those of the two functions it
# replaced (conntrack's keyed_hash, and net.sockets.keyed: unkeyed BLAKE2b of
# repr((seed,) + parts)), so no ISN, port, IP ID or choice moves.
from ipaddress import IPv4Address as A

import pytest

from kdp.conntrack.keyed import keyed_hash

CASES = [
    ((0, "isn", "pod/default/a", "10.0.0.1", 80, "10.0.0.2", 40000), 15489600872544092149, 4064345395990158266),
    ((7, "ts", "node/n1"), 7929229428160028748, 16811271886831761571),
    ((3, "lb", "1.2.3.4", 5, A("10.0.0.1"), 80, "TCP"), 17749483706482292839, 10695262393076283130),
    ((2 ** 64 + 5, "x"), 7250972974252380649, 3309634282863984060),
]


@pytest.mark.parametrize("args, keyed, in_repr", CASES)
def test_both_constructions_keep_their_values(args, keyed, in_repr):
    assert keyed_hash(*args) == keyed
    assert keyed_hash(*args, seed_as_key=False) == in_repr


def test_the_constructions_differ_and_the_repr_one_sees_types():
    assert keyed_hash(1, "a", 2) != keyed_hash(1, "a", 2, seed_as_key=False)
    # str() joins 2 and "2" alike; repr() does not
    assert keyed_hash(1, 2) == keyed_hash(1, "2")
    assert keyed_hash(1, 2, seed_as_key=False) != keyed_hash(1, "2", seed_as_key=False)
