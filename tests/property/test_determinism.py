# Same cluster, same seed, same input: byte-identical captures on every device
# and identical outcomes, whether the input is traced flows or a raw pcap-like
# stream.
from hypothesis import given, strategies as st

from kdp.emulator import Emulator
from kdp.k8s import load_cluster_text
from kdp.testing.invariants import same_seed_same_output
from kdp.testing.strategies import cluster_texts, flows, pcap_streams, pod_endpoints


@given(text=cluster_texts(max_services=3), data=st.data())
def test_same_seed_same_flows_same_bytes(text, data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    cluster = load_cluster_text(text)
    todo = data.draw(st.lists(flows(cluster), min_size=1, max_size=5), label="flows")
    same_seed_same_output(lambda: Emulator(load_cluster_text(text), seed=seed),
                          lambda emu: [emu.trace(*f, time=float(i)) for i, f in enumerate(todo)])


@given(text=cluster_texts(max_pods=3, max_services=2), data=st.data())
def test_same_seed_same_stream_same_bytes(text, data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    scratch = Emulator(load_cluster_text(text), seed=seed)
    at = data.draw(st.sampled_from(pod_endpoints(scratch.cluster)), label="at")
    stream = data.draw(pcap_streams(scratch, at, valid=False, max_size=6), label="stream")
    same_seed_same_output(lambda: Emulator(load_cluster_text(text), seed=seed),
                          lambda emu: [out for out, _err in emu.send_many(stream, at)])
