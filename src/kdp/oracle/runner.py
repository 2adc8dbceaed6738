# oracle.runner: one oracle session. Builds the real twin of a cluster
# (oracle.build), opens a capture socket on every device, starts the echo
# servers and, per scenario, resets both sides to empty neighbour/FDB state,
# injects the same frames into a fresh kdp Emulator and into the kernel,
# waits for the kernel to settle, and compares the per-device captures
# (oracle.compare). Everything it created is torn down by close(), also on
# exceptions, Ctrl-C, SIGTERM and at exit (netns.REGISTRY).
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .. import wire
from . import netns as N
from .build import OracleSettings, RealCluster
from .capture import Sniffer, write_pcap
from .compare import DeviceResult, Frame, Mapper, compare_captures
from .force import choices_from_frames, force_emulator, forcing_misses, kdp_dumps
from .inject import Injector
from .listeners import EchoServers
from .scenarios import Scenario, StepError


# `--apps off` in a real pod: its stack takes in what reaches it and answers nothing
APPS_OFF_RULE = ["INPUT", "-j", "DROP"]


class ScenarioUnsupported(Exception):
    """The kernel here cannot run this scenario without touching the host
    (e.g. a per-namespace nf_conntrack_max); the message says why."""


@dataclass
class ScenarioResult:
    scenario: Scenario
    devices: list[DeviceResult]
    mapper: Mapper
    kdp_frames: int
    kernel_frames: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    kernel_conntrack: dict = field(default_factory=dict)   # node -> `conntrack -L` lines (rules=True)


def make_emulator(cluster, seed: int, rules: bool):
    """A fresh kdp Emulator. rules=False: its namespaces' netfilter removed
    (the kernel twin then has no rules either). Returns (emulator, note)."""
    from ..emulator import Emulator
    emu = Emulator(cluster, seed=seed)
    if not host_has_sctp():            # the real twin's stack answers SCTP as an unknown protocol
        for ns in emu.topology.namespaces.values():
            if ns.sockets is not None:
                ns.sockets.sctp_stack = False
    if not rules:
        for ns in emu.topology.namespaces.values():
            ns.netfilter = None
        return emu, None
    if not any(ns.netfilter is not None for ns in emu.topology.namespaces.values()):
        return emu, "kdp runs no netfilter in any namespace: the kernel has rules, kdp none"
    return emu, None


def host_has_sctp() -> bool:
    """Whether this kernel can open SCTP sockets (the sctp module is there)."""
    import socket
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close()
        return True
    except OSError:
        return False


def kdp_has_rules(cluster, seed: int = 0) -> bool:
    from ..emulator import Emulator
    return any(ns.netfilter is not None for ns in Emulator(cluster, seed=seed).topology.namespaces.values())


class Oracle:
    def __init__(self, cluster, seed: int = 0, rules: bool | None = None, prefix: str | None = None,
                 settings: OracleSettings | None = None, keep_pcaps: str | None = None):
        """rules: True: each kdp namespace's netfilter ruleset is loaded into
        its real twin with iptables-restore; False: neither side has rules
        (kdp's netfilter is removed); None: True when kdp runs netfilter."""
        if rules is None:
            rules = kdp_has_rules(cluster, seed)
        self.cluster, self.seed, self.rules = cluster, seed, rules
        self.prefix = prefix or N.default_prefix()
        self.settings = settings or OracleSettings()
        self.keep_pcaps = keep_pcaps
        self.real: RealCluster | None = None
        self.sniffer = Sniffer()
        self.injector = Injector()
        self.servers = EchoServers()
        self.build_seconds = 0.0

    def __enter__(self) -> "Oracle":
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        t0 = time.perf_counter()
        emu, _ = make_emulator(self.cluster, self.seed, self.rules)
        self.real = RealCluster(emu, prefix=self.prefix, rules=self.rules, settings=self.settings)
        N.REGISTRY.closers.append(self._close_sockets)
        self.real.build()
        for ns in emu.topology.namespaces.values():
            netns = self.real.netns[ns.name]
            devs = [d.name for d in ns.devices.values() if d.kind != "loopback"]
            self.sniffer.open(netns, ns.name, devs)
            if ns.sockets is not None:
                self.servers.open(netns, ns.name, ns.sockets.listening(), transparent=ns.catch_all)
        self.real.add_outside_addresses([h.address for h in self.cluster.config.external_hosts])
        self.sniffer.start()
        self.servers.start()
        self.build_seconds = time.perf_counter() - t0

    def _close_sockets(self) -> None:
        self.sniffer.close()
        self.injector.close()
        self.servers.close()

    def close(self) -> list[str]:
        self._close_sockets()              # sockets pin namespaces: close them first
        if self._close_sockets in N.REGISTRY.closers:
            N.REGISTRY.closers.remove(self._close_sockets)
        left = self.real.close() if self.real is not None else []
        return left

    # --- one scenario ----------------------------------------------------------
    def run(self, sc: Scenario) -> ScenarioResult:
        t0 = time.perf_counter()
        notes = []
        self._kernel_note = None
        self._conntrack = {}
        kern_caps = self._run_kernel(sc)      # first: kdp is then forced to the kernel's random choices
        if self._kernel_note:
            notes.append(self._kernel_note)
        kdp_caps, note = self._run_kdp(sc, kern_caps)
        if note:
            notes.append(note)
        mapper = Mapper()
        for st in sc.steps:
            if st.frame is None:
                continue
            p = wire.parse(st.frame)
            if p.ip is not None:
                mapper.fixed_ids.add((p.ip.src, p.ip.dst, p.ip.proto, p.ip.ident))
                if p.ports[0] is not None:
                    mapper.fixed_senders.add((p.ip.src, p.ports[0]))
        devices = self.real.devices()
        devices += [k for k in list(kdp_caps) + list(kern_caps) if k not in devices]
        results = compare_captures(kdp_caps, kern_caps, mapper, devices)
        if self.keep_pcaps:
            self._write_pcaps(sc, kdp_caps, kern_caps)
        return ScenarioResult(sc, results, mapper, sum(map(len, kdp_caps.values())),
                              sum(map(len, kern_caps.values())), time.perf_counter() - t0, notes,
                              self._conntrack)

    def _run_kdp(self, sc: Scenario, kern_caps: dict | None = None):
        emu, note = make_emulator(self.cluster, self.seed, self.rules)
        forced, keep = {}, None
        if self.rules and sc.force != "none":
            if sc.force == "first":
                first = wire.parse(sc.steps[0].frame)
                t = (first.ip.proto, first.ip.src, first.ip.dst) + tuple(first.ports)
                keep = lambda k: k == t         # noqa: E731
            sent = [wire.parse(st.frame) for st in sc.steps if st.frame is not None]
            seen = choices_from_frames(sent, kern_caps or {})
            forced = force_emulator(emu, self._conntrack, keep, seen)
        if forced.get("endpoints") or forced.get("snat"):
            note = (note + "; " if note else "") + \
                f"kdp forced to the kernel's random choices: {forced['endpoints']} endpoint(s) " \
                f"(statistic), {forced['snat']} SNAT port(s) (MASQUERADE --random-fully)"
        if sc.apps_off:                          # kdp run --apps off (kdp.runner.PcapRun does the same)
            for ns in emu.topology.namespaces.values():
                if ns.kind == "pod" and ns.sockets is not None:
                    ns.sockets.silent = True
        if sc.silent_client:
            sockets = emu.namespace(sc.silent_client).sockets
            for st in sc.steps:
                if st.frame is None or st.ns != sc.silent_client:
                    continue
                p = wire.parse(st.frame)
                if isinstance(p.l4, wire.TCP) and p.l4.flags & wire.SYN and not p.l4.flags & wire.ACK:
                    sockets.add_client("tcp", p.ip.src, p.l4.sport, p.ip.dst, p.l4.dport)
        for i, st in enumerate(sc.steps):
            dev = emu.namespace(st.ns).devices[st.dev]
            frame = st.frame
            if frame is None:
                inbound = [pkt for _t, pkt, d in emu.captures.get((st.ns, st.dev), []) if d == "in"]
                try:
                    frame = st.make(inbound)
                except StepError as e:
                    note = f"kdp side stopped before step {i} ({st.label}): {e}"
                    break
            emu.datapath.inject(dev, wire.parse(frame), i * 0.001)
        if forced.get("endpoints") or forced.get("snat"):
            missed = forcing_misses(self._conntrack, kdp_dumps(emu, emu.datapath.now), keep)
            if missed:
                note = (note + "; " if note else "") + "forcing did not take effect: " + "; ".join(missed)
        caps: dict = {}
        for (ns, dev), items in emu.captures.items():
            d = emu.namespace(ns).devices.get(dev)
            if d is None or d.kind == "loopback":
                continue
            caps[(ns, dev)] = [Frame(t, direction, wire.emit(pkt), pkt) for t, pkt, direction in items]
        return caps, note

    def _run_kernel(self, sc: Scenario) -> dict:
        outside = []
        for st in sc.steps:
            if st.frame is None:
                continue
            p = wire.parse(st.frame)
            if p.ip is not None:
                outside += [p.ip.src, p.ip.dst]
        self.real.add_outside_addresses(outside)
        self.real.reset()
        undo_sysctls = self._scenario_sysctls(sc)
        added_routes = []
        try:
            for ns, spec in sc.kernel_routes:
                N.ip_batch(self.real.netns[ns], [f"route replace {spec}"], f"scenario {sc.name} route")
                added_routes.append((ns, spec))
            return self._run_kernel_steps(sc)
        finally:
            for ns, spec in added_routes:
                try:
                    N.ip_batch(self.real.netns[ns], [f"route del {spec}"], "scenario route removal")
                except N.NetnsError:
                    pass
            for netns, vals in undo_sysctls.items():
                N.write_sysctls(netns, vals, strict=False)

    def _scenario_sysctls(self, sc: Scenario) -> dict:
        """Write the scenario's sysctls; returns the old values to restore.
        ScenarioUnsupported when the kernel refuses one (read-only here)."""
        undo: dict[str, dict] = {}
        for ns, vals in sc.kernel_sysctls.items():
            me = self.real.netns[ns]
            old = {k: N.read_sysctl(me, k) for k in vals}
            failed = N.write_sysctls(me, vals, strict=False)
            if failed:
                for netns, back in undo.items():
                    N.write_sysctls(netns, back, strict=False)
                raise ScenarioUnsupported(f"{sc.name}: the kernel refuses {'; '.join(failed)} in the "
                                          f"namespace of {ns} (kernel {os.uname().release}): "
                                          "setting it would need the host's (init) namespace")
            undo[me] = old
        return undo

    def _run_kernel_steps(self, sc: Scenario) -> dict:
        self.sniffer.wait_quiet(0.05, 0.5)
        self.sniffer.clear()
        rst_rule = ["OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"]
        silent = self.real.netns[sc.silent_client] if sc.silent_client else None
        if silent:
            r = N.netns_exec(silent, ["iptables", "-w", "-I", *rst_rule])
            if r.returncode != 0:
                raise N.NetnsError(f"iptables in {silent}: {r.stderr.strip()}")
        apps_off = self._apps_off() if sc.apps_off else []
        try:
            for i, st in enumerate(sc.steps):
                frame = st.frame
                if frame is None:
                    inbound = [f.pkt for f in (Frame.of(ts, raw, d) for ts, raw, d in
                                               self.sniffer.peek((st.ns, st.dev))) if f.direction == "in"]
                    try:
                        frame = st.make(inbound)
                    except StepError as e:
                        self._kernel_note = f"kernel side stopped before step {i} ({st.label}): {e}"
                        break
                self.injector.send(self.real.netns[st.ns], st.dev, frame)
                self.sniffer.wait_quiet(sc.quiet, sc.max_wait, min_wait=sc.quiet)
        finally:
            if silent:
                N.netns_exec(silent, ["iptables", "-w", "-D", *rst_rule])
            for me in apps_off:
                N.netns_exec(me, ["iptables", "-w", "-D", *APPS_OFF_RULE])
        caps = {k: [Frame.of(ts, raw, d) for ts, raw, d in v] for k, v in self.sniffer.take().items()}
        self._conntrack = self._conntrack_dump() if self.rules else {}
        return caps

    def _apps_off(self) -> list[str]:
        """`kdp run --apps off` in the real twin: every pod's namespace drops
        what its stack would deliver to a socket (filter INPUT DROP: after the
        pod's device, where the capture sees the frame arrive, and after
        routing; no socket lookup, so no RST, no ICMP error, no echo reply;
        ARP is not IP and still answered). Returns the namespaces changed."""
        done = []
        for ns in self.cluster_namespaces("pod"):
            me = self.real.netns[ns]
            r = N.netns_exec(me, ["iptables", "-w", "-A", *APPS_OFF_RULE])
            if r.returncode != 0:
                for back in done:
                    N.netns_exec(back, ["iptables", "-w", "-D", *APPS_OFF_RULE])
                raise N.NetnsError(f"iptables in {me} ({ns}): {r.stderr.strip()}")
            done.append(me)
        return done

    def cluster_namespaces(self, kind: str) -> list[str]:
        """kdp's names of the namespaces of one kind (pod, node, ...)."""
        return [ns.name for ns in self.real.emu.topology.namespaces.values() if ns.kind == kind]

    def kernel_only(self, steps, pace: float = 0.002, settle: float = 0.3) -> dict[str, list[str]]:
        """Inject static frames into the kernel twin only (no capture kept, no
        kdp run) from empty neighbour/conntrack state, `pace` seconds apart,
        and return the nodes' `conntrack -L` afterwards: the kernel's random
        choices over many flows (the distribution check)."""
        self.real.reset()
        self.sniffer.wait_quiet(0.05, 0.5)
        first = True
        for st in steps:
            self.injector.send(self.real.netns[st.ns], st.dev, st.frame)
            if first:                     # neighbours resolved before the burst
                self.sniffer.wait_quiet(0.05, 1.0, min_wait=0.05)
                first = False
            elif pace:
                time.sleep(pace)
        self.sniffer.wait_quiet(settle, 10.0, min_wait=settle)
        self.sniffer.clear()
        return self._conntrack_dump()

    def _conntrack_dump(self) -> dict[str, list[str]]:
        """The kernel's conntrack entries per node (which endpoint DNAT chose,
        which port MASQUERADE picked): what kdp's choices can be forced to."""
        out = {}
        for name, me in self.real.netns.items():
            if name.startswith("node/"):
                r = N.netns_exec(me, ["conntrack", "-L"], timeout=10)
                lines = [l for l in r.stdout.splitlines() if l.strip()]
                if lines:
                    out[name] = lines
        return out

    def _write_pcaps(self, sc: Scenario, kdp_caps: dict, kern_caps: dict) -> None:
        from .build import short_name
        for side, caps in (("kdp", kdp_caps), ("kernel", kern_caps)):
            for (ns, dev), frames in caps.items():
                path = os.path.join(self.keep_pcaps, sc.name, side, f"{short_name(ns)}__{dev}.pcap")
                write_pcap(path, [(f.ts, f.raw) for f in frames])


def run_oracle(cluster, scenarios: list[Scenario], seed: int = 0, rules: bool | None = None,
               keep_pcaps: str | None = None, prefix: str | None = None,
               settings: OracleSettings | None = None) -> tuple[list[ScenarioResult], dict]:
    """Build, run every scenario, tear down. Returns (results, session info)."""
    N.cleanup_stale()
    with Oracle(cluster, seed=seed, rules=rules, keep_pcaps=keep_pcaps, prefix=prefix, settings=settings) as o:
        results, skipped = [], []
        for sc in scenarios:
            if sc.needs_rules and not o.rules:
                continue
            try:
                results.append(o.run(sc))
            except ScenarioUnsupported as e:
                skipped.append({"scenario": sc.name, "reason": str(e)})
        info = {"build_seconds": round(o.build_seconds, 3), "namespaces": len(o.real.all_netns()),
                "devices": len(o.real.devices()), "settings": o.settings.describe(),
                "warnings": o.real.warnings + o.servers.errors, "rules": o.rules,
                "listeners": len(o.servers.opened), "skipped": skipped}
    return results, info
