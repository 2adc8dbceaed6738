# oracle.netns: the low-level kernel plumbing of the oracle: network namespaces
# named with the oracle's prefix (create, delete, find stale ones), `ip -batch`
# runs inside one namespace, code run in a thread that entered a namespace
# (setns), sysctl writes and ethtool offload switches done from such a thread,
# and the cleanup registry (try/finally, atexit, SIGTERM/SIGINT/SIGHUP).
# It must never touch the host's (init) namespace: every `ip` command runs
# with `-n NS` for a namespace this module created, and threads that enter a
# namespace never come back to create anything in the host.
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import signal
import socket
import struct
import subprocess
import threading

from ..errors import KdpError

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
DEFAULT_PREFIX = "kdpo"
IP_TIMEOUT = 30.0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class NetnsError(KdpError):
    """A namespace could not be built or entered."""


def default_prefix() -> str:
    return f"{DEFAULT_PREFIX}{os.getpid()}-"


def available() -> str | None:
    """None when the oracle can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "the kernel oracle needs root (network namespaces)"
    try:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns` is not usable: {e}"
    if out.returncode != 0:
        return f"`ip netns` is not usable: {out.stderr.strip()}"
    if not hasattr(_libc, "setns"):
        return "libc has no setns()"
    return None


# --- running code inside a namespace ------------------------------------------

def _enter(name: str) -> None:
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise NetnsError(f"setns({name}): {os.strerror(e)}")
    finally:
        os.close(fd)


def run_in(name: str, fn, *args, **kw):
    """fn(*args, **kw) in a short-lived thread that entered namespace `name`;
    the calling thread (and the processes it starts) stay where they are.
    Sockets fn creates stay in `name` for their whole life."""
    box: dict = {}

    def work():
        try:
            _enter(name)
            box["result"] = fn(*args, **kw)
        except BaseException as e:          # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=work, name=f"netns:{name}", daemon=True)
    t.start()
    t.join(IP_TIMEOUT)
    if t.is_alive():
        raise NetnsError(f"work inside {name} did not finish in {IP_TIMEOUT} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def write_sysctls(name: str, values: dict[str, object], strict: bool = True) -> list[str]:
    """Write sysctls (dotted names) inside namespace `name`; returns failures."""
    def work():
        failed = []
        for key, val in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path, "w") as f:
                    f.write(str(val))
            except OSError as e:
                failed.append(f"{key}={val}: {e.strerror}")
        return failed
    failed = run_in(name, work)
    if failed and strict:
        raise NetnsError(f"sysctl in {name}: " + "; ".join(failed))
    return failed


def read_sysctl(name: str, key: str) -> str:
    def work():
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    return run_in(name, work)


def flush_xt_recent(name: str) -> list[str]:
    """Empty every `-m recent` list of namespace `name` (writing "/" to
    /proc/net/xt_recent/LIST, read through the thread's own netns); returns
    the lists flushed."""
    def work():
        base = "/proc/thread-self/net/xt_recent"
        try:
            lists = sorted(os.listdir(base))
        except FileNotFoundError:
            return []
        for n in lists:
            with open(os.path.join(base, n), "w") as f:
                f.write("/\n")
        return lists
    return run_in(name, work)


def sysctl_writable(name: str, key: str) -> bool:
    """Whether `key` can be written inside namespace `name` (some net.*
    sysctls are global and read-only outside the init namespace)."""
    def work():
        return os.access("/proc/sys/" + key.replace(".", "/"), os.W_OK)
    return run_in(name, work)


def probe_sysctl(key: str, value: object) -> str | None:
    """Whether this kernel lets a child network namespace set `key` to `value`:
    None when it does, else why not. Tried in a throwaway namespace
    `kdpo<pid>-probe` (deleted at once); the host's value is never touched."""
    name = f"{default_prefix()}probe"
    REGISTRY.install()
    REGISTRY.add([name])
    try:
        create_netns([name])
        if key.startswith("net.netfilter."):
            # the nf_conntrack sysctls appear in a namespace once conntrack is used there
            netns_exec(name, ["iptables", "-w", "-t", "raw", "-A", "OUTPUT", "-m", "conntrack",
                              "--ctstate", "NEW"])
        try:
            old = read_sysctl(name, key)
        except OSError as e:
            return f"{key} does not exist in a child network namespace ({e.strerror})"
        if not sysctl_writable(name, key):
            return (f"{key} is read-only in a child network namespace on kernel {os.uname().release} "
                    f"(global: only the init namespace may set it; currently {old})")
        failed = write_sysctls(name, {key: value}, strict=False)
        return failed[0] if failed else None
    finally:
        REGISTRY.cleanup([name])


# --- ethtool (offloads) without the ethtool binary --------------------------

SIOCETHTOOL = 0x8946
ETHTOOL_SRXCSUM, ETHTOOL_STXCSUM, ETHTOOL_SSG = 0x15, 0x17, 0x19
ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_SGRO = 0x1F, 0x24, 0x2C
OFFLOADS = (("tx-checksum", ETHTOOL_STXCSUM), ("scatter-gather", ETHTOOL_SSG),
            ("tso", ETHTOOL_STSO), ("gso", ETHTOOL_SGSO), ("gro", ETHTOOL_SGRO),
            ("rx-checksum", ETHTOOL_SRXCSUM))


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


def _ethtool_off(sock: socket.socket, dev: str) -> list[str]:
    failed = []
    for label, cmd in OFFLOADS:
        val = _EthtoolValue(cmd, 0)
        ifr = struct.pack("16sP", dev.encode(), ctypes.addressof(val)) + b"\x00" * 16
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                failed.append(f"{dev} {label}: {e.strerror}")
    return failed


def offloads_off(name: str, devices: list[str]) -> list[str]:
    """`ethtool -K DEV tx off rx off sg off tso off gso off gro off` for each
    device of namespace `name` (checksums then appear complete in captures and
    the receiver really verifies them). Returns what could not be switched."""
    def work():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            out = []
            for d in devices:
                out += _ethtool_off(s, d)
            return out
        finally:
            s.close()
    return run_in(name, work)


# --- ip(8) ------------------------------------------------------------------

def ip_batch(ns: str | None, lines: list[str], what: str = "") -> None:
    """Run `ip [-n NS] -batch -` with the given command lines (no -force: the
    first failing line stops the batch and raises)."""
    if not lines:
        return
    cmd = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    try:
        out = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True,
                             timeout=IP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"ip -batch in {ns} timed out ({what})") from None
    if out.returncode != 0:
        raise NetnsError(f"ip -batch in {ns} failed ({what}): {out.stderr.strip()}")


def ip_json(ns: str, *args: str):
    import json
    out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True,
                         timeout=IP_TIMEOUT)
    if out.returncode != 0:
        raise NetnsError(f"ip -n {ns} {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout or "[]")


def netns_exec(ns: str, argv: list[str], input: str | None = None, timeout: float = IP_TIMEOUT):
    """`ip netns exec NS argv...` (for iptables-restore, conntrack)."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True,
                          text=True, timeout=timeout)


# --- namespaces and cleanup ---------------------------------------------------

def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create_netns(names: list[str]) -> None:
    for n in names:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", n) or not n.startswith(DEFAULT_PREFIX):
            raise NetnsError(f"refusing to create namespace {n!r}")
    ip_batch(None, [f"netns add {n}" for n in names], "netns add")


def delete_netns(names) -> list[str]:
    """Delete the namespaces; returns those that could not be deleted."""
    left = []
    for n in names:
        if not n.startswith(DEFAULT_PREFIX):
            continue
        r = subprocess.run(["ip", "netns", "del", n], capture_output=True, text=True, timeout=IP_TIMEOUT)
        if r.returncode != 0 and n in list_netns():
            left.append(n)
    return left


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces `PREFIX<pid>-...` left by oracle runs whose process is
    gone (never those of a live process, including this one)."""
    stale = []
    pat = re.compile(re.escape(prefix) + r"(\d+)-")
    for n in list_netns():
        m = pat.match(n)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            stale.append(n)
    delete_netns(stale)
    return stale


class Registry:
    """Namespaces (and closers) of this process that must go away on exit,
    however the process ends: normal return, exception, atexit, SIGTERM."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.closers: list = []
        self._lock = threading.Lock()
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        atexit.register(self.cleanup)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                try:
                    prev = signal.getsignal(sig)
                    signal.signal(sig, self._make_handler(sig, prev))
                except (ValueError, OSError):
                    pass

    def _make_handler(self, sig, prev):
        def handler(signum, frame):
            self.cleanup()
            if callable(prev):
                prev(signum, frame)
            raise SystemExit(128 + signum)
        return handler

    def add(self, names) -> None:
        with self._lock:
            self.names.update(names)

    def cleanup(self, names=None) -> list[str]:
        with self._lock:
            closers, self.closers = (self.closers, []) if names is None else ([], self.closers)
            todo = set(self.names if names is None else names) & self.names
        for c in closers:
            try:
                c()
            except Exception:
                pass
        left = delete_netns(sorted(todo))
        with self._lock:
            self.names -= todo - set(left)
        return left


REGISTRY = Registry()
