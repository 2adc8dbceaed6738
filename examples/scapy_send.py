"""Send Scapy-built frames into the demo cluster and read where they went.

    python examples/scapy_send.py
"""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from kdp import Emulator

emu = Emulator.demo(seed=1)
client = emu.cluster.pod("default", "client")
backend = next(p for p in emu.cluster.pods if p.labels.get("app") == "service-a")

# 1. Let the client's own stack send a SYN (routing, ARP and all), as an app would.
out = emu.trace(f"pod/default/{client.name}", f"pod/backend/{backend.name}", dport=8080)
print(f"trace: {out.disposition} to {out.delivered_to}, TTL on arrival {out.packet.ip.ttl}")
for hop in out.hops:
    if hop.leg == "request":
        print(f"  {hop.namespace:<45} {hop.device or '':<14} {hop.component:<9} {hop.detail}")

# 2. Put a hand-made frame on the client's eth0 exactly as it is.
client_ns = emu.namespace(f"pod/default/{client.name}")
gateway_mac = emu.namespace(f"node/{client.node}").devices["cbr0"].mac
frame = (Ether(src=client_ns.devices["eth0"].mac, dst=gateway_mac)
         / IP(src=str(client.ip), dst=str(backend.ip), ttl=3)
         / TCP(sport=40000, dport=8080, flags="S"))
raw = emu.send(frame, at=f"pod/default/{client.name}")
print(f"send: {raw.disposition} to {raw.delivered_to}, TTL on arrival {raw.packet.ip.ttl}")
print(f"reply: {raw.reply.disposition} {raw.reply.packet.summary()}")

# 3. TTL 1 dies at the first router: the gateway answers with ICMP time exceeded.
frame[IP].ttl = 1
del frame[IP].chksum
dead = emu.send(frame, at=f"pod/default/{client.name}")
print(f"ttl 1: {dead.disposition} ({dead.reason}); answer: {dead.reply.packet.summary()}")

# 4. Every device's capture, as tcpdump would have written it.
files = emu.write_captures("scapy-send-pcaps")
print(f"wrote {len(files)} pcaps to scapy-send-pcaps/")
