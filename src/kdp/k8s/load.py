# k8s.load: cluster input files (YAML, multi-document, kubectl `List`s) into
# RawObjects that remember the file and the line of every field, plus the problem
# Report and the typed field reader (Fields) the decoders use. No Kubernetes meaning.
from __future__ import annotations

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_network
from typing import Any, Callable, Iterable

import yaml

from ..errors import Problem
from . import names
from .model import Source

# Kinds without a namespace (metadata.namespace is ignored on them).
CLUSTER_SCOPED = {"Namespace", "Node", "ClusterConfig", "IngressClass", "ClusterRole",
                  "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}

Path = tuple  # field path segments: str keys and int list indices


class LineDict(dict):
    """A YAML mapping that remembers its own line and the line of each key."""

    line: int = 0
    key_lines: dict


class LineList(list):
    """A YAML sequence that remembers its own line and the line of each item."""

    line: int = 0
    item_lines: list


class _Loader(yaml.SafeLoader):
    duplicates: list


# libyaml parses about 4x faster; on any error the pure-Python parser runs again
# to give the precise message and line (the C composer can fail without a mark).
_FastLoader = type("_FastLoader", (yaml.CSafeLoader,), {}) if yaml.__with_libyaml__ else None


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be scalars", key_node.start_mark)
        if key in out.key_lines:
            loader.duplicates.append((key, key_node.start_mark.line + 1, key_node.start_mark.column + 1))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(item, deep=True) for item in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [item.start_mark.line + 1 for item in node.value]
    return out


for _cls in (_Loader, _FastLoader) if _FastLoader else (_Loader,):
    _cls.add_constructor("tag:yaml.org,2002:map", _construct_map)
    _cls.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
    # Timestamps (creationTimestamp, deletionTimestamp) stay strings, as Kubernetes keeps them.
    _cls.add_constructor("tag:yaml.org,2002:timestamp",
                         lambda loader, node: loader.construct_scalar(node))


def plain(value: Any) -> Any:
    """A copy of a loaded value made of plain dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string"}.get(
        type(value), "mapping" if isinstance(value, dict) else
        "list" if isinstance(value, list) else type(value).__name__)


def a_type(value: Any) -> str:
    """'an integer', 'a list': the type of value with its article, for messages."""
    name = type_name(value)
    return ("an " if name[0] in "aeiou" else "a ") + name


def format_path(path: Iterable) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += ("." if out else "") + str(seg)
    return out


def line_of(body: Any, path: Iterable, default: int | None) -> int | None:
    """The line of the deepest part of path present in body."""
    line, cur = default, body
    for seg in path:
        if isinstance(cur, LineDict) and not isinstance(seg, int) and seg in cur:
            line, cur = cur.key_lines.get(seg, line), cur[seg]
        elif isinstance(cur, LineList) and isinstance(seg, int) and 0 <= seg < len(cur):
            line, cur = cur.item_lines[seg], cur[seg]
        else:
            break
    return line


@dataclass
class RawObject:
    """One Kubernetes object as written, with where it came from."""

    kind: str
    api_version: str
    name: str
    namespace: str | None           # None for cluster-scoped kinds
    body: LineDict
    file: str
    line: int

    @property
    def source(self) -> Source:
        return Source(self.file, self.line)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def line_of(self, path: Iterable) -> int:
        return line_of(self.body, path, self.line)


@dataclass
class Report:
    """Collects every problem and warning, in the order found."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def _problem(self, obj: RawObject | None, path: Iterable, message: str,
                 file: str | None, line: int | None, column: int | None = None) -> Problem:
        path = tuple(path)
        if obj is None:
            return Problem(file or "<input>", line, "", None, None, format_path(path), message,
                           column)
        return Problem(obj.file, obj.line_of(path), obj.kind, obj.namespace, obj.name,
                       format_path(path), message)

    def error(self, obj: RawObject | None, path: Iterable, message: str, *,
              file: str | None = None, line: int | None = None,
              column: int | None = None) -> None:
        self.problems.append(self._problem(obj, path, message, file, line, column))

    def warn(self, obj: RawObject | None, path: Iterable, message: str) -> None:
        self.warnings.append(str(self._problem(obj, path, message, None, None)))


_MISSING = object()


def sloppy_ipv4(text: str) -> IPv4Address | None:
    """netutils.ParseIPSloppy for IPv4: dotted decimal whose octets may carry
    leading zeros (read as decimal, not octal); None if it is not even that."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() for p in parts):
        return None
    octets = [int(p) for p in parts]
    return IPv4Address(".".join(map(str, octets))) if all(o <= 255 for o in octets) else None


class Fields:
    """Typed access to an object's fields; wrong types become problems, not exceptions."""

    def __init__(self, obj: RawObject, report: Report, base: Path = ()):
        self.obj, self.report, self.base = obj, report, tuple(base)

    def at(self, *path) -> Fields:
        return Fields(self.obj, self.report, self.base + path)

    def raw(self, *path) -> Any:
        cur: Any = self.obj.body
        for seg in self.base + path:
            if isinstance(seg, int):
                if not isinstance(cur, list) or not 0 <= seg < len(cur):
                    return _MISSING
            elif not isinstance(cur, dict) or seg not in cur:
                return _MISSING
            cur = cur[seg]
        return cur

    def has(self, *path) -> bool:
        value = self.raw(*path)
        return value is not _MISSING and value is not None

    def error(self, path: Path, message: str) -> None:
        self.report.error(self.obj, self.base + tuple(path), message)

    def warn(self, path: Path, message: str) -> None:
        self.report.warn(self.obj, self.base + tuple(path), message)

    def _get(self, path: Path, types: tuple, what: str, default: Any, required: bool) -> Any:
        value = self.raw(*path)
        if value is _MISSING or value is None:
            if required:
                self.error(path, "required field is missing")
            return default
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            self.error(path, f"must be {what}, got {type_name(value)} {value!r}"
                       if not isinstance(value, (dict, list)) else
                       f"must be {what}, got a {type_name(value)}")
            return default
        return value

    def str(self, *path, default: str | None = None, required: bool = False) -> str | None:
        return self._get(path, (str,), "a string", default, required)

    def int(self, *path, default: int | None = None, required: bool = False,
            lo: int | None = None, hi: int | None = None) -> int | None:
        value = self._get(path, (int,), "an integer", _MISSING, required)
        if value is _MISSING:
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.error(path, f"{value} is out of range {lo}-{hi}" if hi is not None
                       else f"must be at least {lo}, got {value}")
            return default
        return value

    def bool(self, *path, default: bool = False) -> bool:
        return self._get(path, (bool,), "true or false", default, False)

    def map(self, *path, required: bool = False) -> dict:
        return self._get(path, (dict,), "a mapping", {}, required)

    def list(self, *path, required: bool = False) -> list:
        return self._get(path, (list,), "a list", [], required)

    def items(self, *path) -> list[Fields]:
        """A Fields view on each element of the list at path."""
        return [self.at(*path, i) for i in range(len(self.list(*path)))]

    def strmap(self, *path) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in self.map(*path).items():
            if not isinstance(key, str) or not isinstance(value, str):
                self.error(path + (str(key),), f"must map strings to strings, got "
                           f"{type_name(key)} {key!r}: {type_name(value)} {value!r}")
                continue
            out[key] = value
        return out

    def check(self, path: Path, value: str | None, rule: Callable[[str], str | None]) -> None:
        """Report value (found at path) if the name rule rejects it."""
        if value is not None and (msg := rule(value)):
            self.error(path, msg)

    def labels(self, *path) -> dict[str, str]:
        out = self.strmap(*path)
        for key, value in out.items():
            if msg := names.label_key(key) or names.label_value(value):
                self.error(path + (key,), msg)
        return out

    def protocol(self, *path) -> str:
        value = self.str(*path, default="TCP")
        if value not in ("TCP", "UDP", "SCTP"):
            self.error(path, f"protocol must be TCP, UDP or SCTP, got {value!r}")
            return "TCP"
        return value

    def ip(self, *path, required: bool = False, legacy: bool = False) -> IPv4Address | None:
        """An IPv4 address. legacy: a Kubernetes field the 1.33 API server validates
        the legacy way (IsValidIPForLegacyField without StrictIPCIDRValidation): octets
        with leading zeros are accepted with a warning and read as decimal, as
        kube-proxy's ParseIPSloppy reads them."""
        text = self.str(*path, required=required)
        if text is None:
            return None
        try:
            addr = ip_address(text)
        except ValueError:
            sloppy = sloppy_ipv4(text)
            if sloppy is not None and legacy:
                self.warn(path, f"{text!r} has octets with leading zeros: the API server accepts "
                          f"it (with a warning) and kube-proxy reads it as {sloppy}")
                return sloppy
            self.error(path, f"{text!r} is not a valid IPv4 address" + (
                f" (leading zeros are not allowed here; write {sloppy})" if sloppy else ""))
            return None
        if not isinstance(addr, IPv4Address):
            self.error(path, f"{text}: IPv6 is not supported")
            return None
        return addr

    def net(self, *path, required: bool = False, legacy: bool = False) -> IPv4Network | None:
        """A network CIDR; host bits set is an error (10.0.0.1/24). legacy: a field
        the API server validates the legacy way and kube-proxy parses with
        ParseCIDRSloppy after strings.TrimSpace (loadBalancerSourceRanges): spaces
        around it are trimmed, leading zeros and host bits accepted with a warning."""
        text = self.str(*path, required=required)
        if text is None:
            return None
        if legacy:
            return self._legacy_net(path, text)
        if "/" not in text:
            self.error(path, f"{text!r} is not a CIDR: write it like 10.0.0.0/16")
            return None
        try:
            net = ip_network(text)
        except ValueError as exc:
            try:
                fixed = ip_network(text, strict=False)
            except ValueError:
                self.error(path, f"{text!r} is not a valid IPv4 CIDR ({exc})")
                return None
            self.error(path, f"{text} has host bits set (the network is {fixed})")
            return None
        if not isinstance(net, IPv4Network):
            self.error(path, f"{text}: IPv6 is not supported")
            return None
        return net

    def _legacy_net(self, path: Path, text: str) -> IPv4Network | None:
        addr, slash, bits = text.strip().partition("/")
        ip = sloppy_ipv4(addr) if addr else None
        if ip is None:
            try:
                ip = IPv4Address(addr)
            except ValueError:
                ip = None
        if ip is None or not slash or not bits.isdigit() or int(bits) > 32:
            self.error(path, f"{text!r} is not a valid IPv4 CIDR: write it like 10.0.0.0/16")
            return None
        net = IPv4Network(f"{ip}/{int(bits)}", strict=False)
        if str(ip) != addr or bits != str(int(bits)):
            self.warn(path, f"{text.strip()!r} has octets with leading zeros: the API server "
                      f"accepts it (with a warning) and kube-proxy reads it as {net}")
        elif net.network_address != ip:
            self.warn(path, f"{text.strip()} has host bits set: kube-proxy uses the network {net}")
        return net

    def iface(self, *path) -> IPv4Interface | None:
        """An address with a prefix, like a bridge's 172.17.0.1/16."""
        text = self.str(*path)
        if text is None:
            return None
        try:
            iface = IPv4Interface(text)
        except ValueError as exc:
            self.error(path, f"{text!r} is not a valid IPv4 address with prefix ({exc})")
            return None
        if "/" not in text or iface.network.prefixlen < 31 and iface.ip in (
                iface.network.network_address, iface.network.broadcast_address):
            self.error(path, f"{text!r} must be a host address with a prefix, like 172.17.0.1/16")
            return None
        return iface


# --- reading files ---------------------------------------------------------------

def read_paths(paths: str | os.PathLike | list, report: Report) -> list[tuple[str, str]]:
    """(display name, text) for each YAML file named by paths (files or directories)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith((".yaml", ".yml")))
            if not names:
                report.error(None, (), "directory has no *.yaml or *.yml files", file=path)
            files = [os.path.join(path, n) for n in names]
        else:
            files = [path]
        for name in files:
            try:
                with open(name, encoding="utf-8") as fh:
                    out.append((name, fh.read()))
            except FileNotFoundError:
                report.error(None, (), "no such file or directory", file=name)
            except UnicodeDecodeError:
                report.error(None, (), "not a UTF-8 text file", file=name)
            except OSError as exc:
                report.error(None, (), f"cannot read: {exc.strerror or exc}", file=name)
    return out


def parse_text(file: str, text: str, report: Report) -> list[RawObject]:
    """Every object in one YAML text; syntax errors become problems with their line."""
    if _FastLoader is not None:
        trial = Report()
        try:
            objects = _parse(_FastLoader(text), file, trial, [])
        except Exception:       # noqa: BLE001 - the careful parser below reports it
            pass
        else:
            report.problems.extend(trial.problems)
            return objects
    objects = []               # documents before a syntax error still count
    try:
        return _parse(_Loader(text), file, report, objects)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        opened = getattr(exc, "context_mark", None)
        if opened and "<stream end>" in str(getattr(exc, "problem", "")):
            mark = opened               # an unclosed bracket or quote: where it was opened
        what = ", ".join(str(s) for s in (getattr(exc, "context", None),
                                          getattr(exc, "problem", None)) if s) or str(exc)
        report.error(None, (), f"invalid YAML: {what}", file=file,
                     line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None)
    except RecursionError:
        report.error(None, (), "invalid YAML: nested too deeply", file=file)
    return objects


def _parse(loader: Any, file: str, report: Report, objects: list[RawObject]) -> list[RawObject]:
    """Adds the objects of every document to objects; YAML errors propagate."""
    loader.duplicates = []
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = loader.construct_document(node)
            for key, line, column in loader.duplicates:
                report.error(None, (), f"duplicate key {key!r} in a mapping", file=file, line=line,
                             column=column)
            loader.duplicates.clear()
            if doc is None:
                continue
            _collect(doc, file, node.start_mark.line + 1, report, objects)
    finally:
        loader.dispose()
    return objects


def _collect(doc: Any, file: str, line: int, report: Report, out: list[RawObject]) -> None:
    if not isinstance(doc, dict):
        report.error(None, (), f"a document must be a mapping (a Kubernetes object), "
                     f"got {a_type(doc)}", file=file, line=line)
        return
    line = getattr(doc, "line", line)
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc["items"]
        if items is None:
            return
        if not isinstance(items, list):
            report.error(None, ("items",), f"must be a list, got {a_type(items)}",
                         file=file, line=line_of(doc, ("items",), line))
            return
        for i, item in enumerate(items):
            _collect(item, file, line_of(doc, ("items", i), line), report, out)
        return
    obj = _raw_object(doc, file, line, report)
    if obj is not None:
        out.append(obj)


def _raw_object(doc: LineDict, file: str, line: int, report: Report) -> RawObject | None:
    kind, api, meta = doc.get("kind"), doc.get("apiVersion"), doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    obj = RawObject(kind if isinstance(kind, str) else "", api if isinstance(api, str) else "",
                    name if isinstance(name, str) else None, None, doc, file, line)
    if not isinstance(kind, str) or not kind:
        report.error(obj, ("kind",), "required field is missing" if kind is None
                     else f"must be a non-empty string, got {type_name(kind)} {kind!r}")
    if not isinstance(api, str) or not api:
        report.error(obj, ("apiVersion",), "required field is missing" if api is None
                     else f"must be a non-empty string, got {type_name(api)} {api!r}")
    if not isinstance(meta, dict):
        report.error(obj, ("metadata",), "required field is missing" if meta is None
                     else f"must be a mapping, got {a_type(meta)}")
        return None
    if not isinstance(name, str) or not name:
        report.error(obj, ("metadata", "name"), "required field is missing" if name is None
                     else f"must be a non-empty string, got {type_name(name)} {name!r}")
        return None
    if not obj.kind:
        return None
    if obj.kind not in CLUSTER_SCOPED:
        if ns is None or ns == "":
            obj.namespace = "default"
        elif isinstance(ns, str):
            obj.namespace = ns
        else:
            report.error(obj, ("metadata", "namespace"),
                         f"must be a string, got {type_name(ns)} {ns!r}")
            return None
    return obj


def load_texts(texts: list[tuple[str, str]], report: Report) -> list[RawObject]:
    objects: list[RawObject] = []
    for file, text in texts:
        objects.extend(parse_text(file, text, report))
    return objects
