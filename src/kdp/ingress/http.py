# ingress.http: HTTP/1.1 messages as bytes on a TCP stream (RFC 9110/9112):
# incremental parsing of requests and responses that arrive in any number of
# segments (headers complete + a Content-Length or chunked body, or a response
# read until the server closes), the checks nginx makes before it answers 400
# (and 413/414/431/501/505), building messages, nginx's error pages, and the
# path normalisation nginx applies before matching locations. Never raises on
# bad input except HttpError, which carries the status to answer with.
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import unquote_to_bytes

REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Not Allowed", 408: "Request Time-out", 411: "Length Required",
    413: "Request Entity Too Large", 414: "Request-URI Too Large",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out",
    505: "HTTP Version Not Supported",
}

MAX_REQUEST_LINE = 8192          # nginx large_client_header_buffers 4 8k: one line fits a buffer
MAX_HEADER_BYTES = 32768         # ... and all of them fit four
MAX_BODY = 1024 * 1024           # client_max_body_size 1m
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}


class HttpError(Exception):
    """The message cannot be accepted: answer `status` (and close)."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status
        self.why = why


@dataclass
class Headers:
    """Header fields in order, names as written; lookups are case-insensitive."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.items:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.items if k.lower() == name]

    def add(self, name: str, value: str) -> None:
        self.items.append((name, value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.items.append((name, value))

    def remove(self, name: str) -> None:
        name = name.lower()
        self.items = [(k, v) for k, v in self.items if k.lower() != name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every field called name, lowercase."""
        return {t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()}

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __iter__(self):
        return iter(self.items)

    def as_list(self) -> list[list[str]]:
        return [[k, v] for k, v in self.items]


def keep_alive(version: str, headers) -> bool:
    """Whether the connection stays open after this message (RFC 9112 9.3)."""
    conn = headers.tokens("Connection")
    if version == "HTTP/1.0":
        return "keep-alive" in conn
    return "close" not in conn


@dataclass
class Request:
    method: str
    target: str                      # as written: origin-form, absolute-form or *
    version: str                     # HTTP/1.1
    headers: Headers
    body: bytes = b""
    raw: bytes = b""                 # the bytes the message took on the wire

    @property
    def path(self) -> str:
        """The target's path (absolute-form reduced to its path), without the query."""
        t = self.target
        if t.lower().startswith(("http://", "https://")):
            rest = t.split("://", 1)[1]
            t = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return t.split("?", 1)[0].split("#", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def authority(self) -> str:
        """Host[:port] the request is for: the absolute-form target's, else Host."""
        t = self.target
        if t.lower().startswith(("http://", "https://")):
            return t.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        return self.headers.get("Host", "") or ""

    @property
    def host(self) -> str:
        """The host name to route on: lowercase, without port and trailing dot."""
        return host_of(self.authority)

    @property
    def keep_alive(self) -> bool:
        return keep_alive(self.version, self.headers)

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} {self.version}"

    def encode(self) -> bytes:
        return build_request(self.method, self.target, self.headers.items, self.body, self.version)

    def as_dict(self) -> dict:
        return {"method": self.method, "target": self.target, "version": self.version,
                "headers": self.headers.as_list(), "body": _text(self.body)}


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    raw: bytes = b""

    @property
    def status_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}".rstrip()

    @property
    def keep_alive(self) -> bool:
        return keep_alive(self.version, self.headers)

    def encode(self) -> bytes:
        return build_response(self.status, self.headers.items, self.body, self.reason, self.version)

    def text(self) -> str:
        lines = [self.status_line] + [f"{k}: {v}" for k, v in self.headers]
        return "\n".join(lines) + "\n\n" + _text(self.body)

    def as_dict(self) -> dict:
        return {"version": self.version, "status": self.status, "reason": self.reason,
                "headers": self.headers.as_list(), "body": _text(self.body)}


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def host_of(authority: str) -> str:
    """`Shop.Example.com:8080` -> `shop.example.com`; `[::1]:80` -> `[::1]`."""
    a = authority.strip().lower()
    if a.startswith("["):
        return a.split("]", 1)[0] + "]"
    return a.rsplit(":", 1)[0].rstrip(".") if ":" in a else a.rstrip(".")


# --- parsing ------------------------------------------------------------------------

def _head(buf: bytes, limit: int) -> tuple[list[bytes], int] | None:
    """The header section's lines and where the body starts; None when incomplete.
    Lines end in CRLF or a bare LF (nginx accepts both); empty lines before the
    start line are skipped (RFC 9112 2.2)."""
    start = 0
    while buf.startswith(b"\r\n", start) or buf.startswith(b"\n", start):
        start += 2 if buf.startswith(b"\r\n", start) else 1
    m = re.compile(rb"\r?\n\r?\n").search(buf, start)
    if m is None:
        first_end = buf.find(b"\n", start)
        if first_end < 0 and len(buf) - start > MAX_REQUEST_LINE:
            raise HttpError(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
        if len(buf) - start > limit:
            raise HttpError(400, f"header section larger than {limit} bytes")
        return None
    if m.start() - start > limit:
        raise HttpError(400, f"header section larger than {limit} bytes")
    text = buf[start:m.start()]
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in text.split(b"\n")]
    return lines, m.end()


def _fields(lines: list[bytes]) -> Headers:
    h = Headers()
    for ln in lines:
        if not ln:
            continue
        if ln[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding in a header field")
        name, sep, value = ln.partition(b":")
        if not sep:
            raise HttpError(400, f"header line without a colon: {ln[:40]!r}")
        if not TOKEN.match(name):
            raise HttpError(400, f"invalid header name {name[:40]!r}"
                            + (" (whitespace before the colon)" if name.rstrip() != name else ""))
        if b"\0" in value or b"\r" in value:
            raise HttpError(400, f"invalid character in header {name.decode()!r}")
        h.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    return h


def _version(raw: bytes) -> str:
    m = VERSION.match(raw)
    if not m:
        raise HttpError(400, f"invalid HTTP version {raw[:20]!r}")
    major, minor = int(m.group(1)), int(m.group(2))
    if major != 1:
        raise HttpError(505 if major > 1 else 400, f"HTTP/{major}.{minor} is not supported")
    return f"HTTP/1.{minor}" if minor <= 1 else "HTTP/1.1"


def _body_length(h: Headers) -> int | str | None:
    """An int (Content-Length), "chunked", or None (no body framing)."""
    te = h.get_all("Transfer-Encoding")
    cls = h.get_all("Content-Length")
    if te:
        codings = [t.strip().lower() for v in te for t in v.split(",") if t.strip()]
        if cls:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if codings != ["chunked"]:
            raise HttpError(501, f"unsupported Transfer-Encoding {', '.join(codings)}")
        return "chunked"
    if not cls:
        return None
    values = {v.strip() for c in cls for v in c.split(",")}
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise HttpError(400, f"invalid Content-Length {', '.join(cls)}")
    return int(next(iter(values)))


def _chunked(buf: bytes, pos: int, limit: int) -> tuple[bytes, int] | None:
    """The de-chunked body and where it ends; None when incomplete."""
    body = b""
    while True:
        eol = buf.find(b"\n", pos)
        if eol < 0:
            if len(buf) - pos > 1024:
                raise HttpError(400, "chunk size line too long")
            return None
        line = buf[pos:eol].rstrip(b"\r").split(b";", 1)[0].strip()
        if not line or not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", line):
            raise HttpError(400, f"invalid chunk size {line[:20]!r}")
        size = int(line, 16)
        pos = eol + 1
        if size == 0:
            while True:                       # trailer fields, then the empty line
                eol = buf.find(b"\n", pos)
                if eol < 0:
                    return None
                done = buf[pos:eol].rstrip(b"\r") == b""
                pos = eol + 1
                if done:
                    return body, pos
        if len(body) + size > limit:
            raise HttpError(413, f"body larger than {limit} bytes")
        if len(buf) < pos + size + 1:
            return None
        body += buf[pos:pos + size]
        pos += size
        if buf.startswith(b"\r\n", pos):
            pos += 2
        elif buf.startswith(b"\n", pos):
            pos += 1
        elif len(buf) - pos < 2:
            return None
        else:
            raise HttpError(400, "chunk data not followed by CRLF")


def _request_line(start: bytes) -> tuple[bytes, bytes, str]:
    if len(start) > MAX_REQUEST_LINE:
        raise HttpError(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
    parts = start.split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HttpError(400, f"invalid request line {start[:60]!r}")
    method, target, version = parts
    if not TOKEN.match(method):
        raise HttpError(400, f"invalid method {method[:20]!r}")
    if any(c < 0x21 or c == 0x7F for c in target):
        raise HttpError(400, "invalid character in the request target")
    ver = _version(version)
    t = target.decode("latin-1")
    if not (t.startswith("/") or t.lower().startswith(("http://", "https://"))
            or (t == "*" and method == b"OPTIONS")):
        raise HttpError(400, f"invalid request target {t[:60]!r}")
    return method, target, ver


def parse_request(buf: bytes, max_body: int = MAX_BODY) -> tuple[Request, int] | None:
    """The first complete request in buf and the bytes it took; None when more
    bytes are needed. Raises HttpError for a request nginx would refuse."""
    head = _head(buf, MAX_HEADER_BYTES)
    if head is None:                      # nginx checks the request line as soon as it is complete
        first = buf.lstrip(b"\r\n")
        if b"\n" in first:
            _request_line(first.split(b"\n", 1)[0].rstrip(b"\r"))
        return None
    lines, body_at = head
    method, target, ver = _request_line(lines[0])
    t = target.decode("latin-1")
    h = _fields(lines[1:])
    hosts = h.get_all("Host")
    if len(hosts) > 1:
        raise HttpError(400, "more than one Host header")
    if ver == "HTTP/1.1" and not hosts:
        raise HttpError(400, "HTTP/1.1 request without a Host header")
    if hosts and not re.fullmatch(r"[A-Za-z0-9.\-_\[\]:]*", hosts[0]):
        raise HttpError(400, f"invalid Host header {hosts[0][:60]!r}")
    length = _body_length(h)
    if length == "chunked":
        got = _chunked(buf, body_at, max_body)
        if got is None:
            return None
        body, end = got
    else:
        n = length or 0
        if n > max_body:
            raise HttpError(413, f"Content-Length {n} is larger than {max_body} bytes")
        if len(buf) < body_at + n:
            return None
        body, end = buf[body_at:body_at + n], body_at + n
    req = Request(method.decode(), t, ver, h, body, buf[:end])
    return req, end


def parse_response(buf: bytes, eof: bool = False, head_request: bool = False,
                   max_body: int = 64 * MAX_BODY) -> tuple[Response, int] | None:
    """The first complete response in buf; None when more bytes are needed. A
    response without framing ends when the server closes (eof)."""
    head = _head(buf, 4 * MAX_HEADER_BYTES)
    if head is None:
        if eof and buf:
            raise HttpError(502, "upstream closed the connection in the middle of the header")
        return None
    lines, body_at = head
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not re.fullmatch(rb"\d{3}", parts[1]):
        raise HttpError(502, f"upstream sent an invalid status line {lines[0][:60]!r}")
    ver = _version(parts[0]) if VERSION.match(parts[0]) else None
    if ver is None:
        raise HttpError(502, f"upstream sent an invalid status line {lines[0][:60]!r}")
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    try:
        h = _fields(lines[1:])
        length = _body_length(h)
    except HttpError as e:
        raise HttpError(502, f"upstream sent an invalid header: {e.why}") from None
    if head_request or status in (204, 304) or 100 <= status < 200:
        length = 0
    if length == "chunked":
        try:
            got = _chunked(buf, body_at, max_body)
        except HttpError as e:
            raise HttpError(502, f"upstream sent an invalid chunked body: {e.why}") from None
        if got is None:
            if eof:
                raise HttpError(502, "upstream closed the connection in the middle of the body")
            return None
        body, end = got
    elif length is None:
        if not eof:
            return None
        body, end = buf[body_at:], len(buf)
    else:
        if len(buf) < body_at + length:
            if eof:
                raise HttpError(502, "upstream closed the connection in the middle of the body")
            return None
        body, end = buf[body_at:body_at + length], body_at + length
    return Response(ver, status, reason, h, body, buf[:end]), end


# --- building -----------------------------------------------------------------------

def build_request(method: str, target: str, headers, body: bytes = b"",
                  version: str = "HTTP/1.1") -> bytes:
    out = f"{method} {target} {version}\r\n"
    out += "".join(f"{k}: {v}\r\n" for k, v in headers)
    return out.encode("latin-1") + b"\r\n" + body


def build_response(status: int, headers, body: bytes = b"", reason: str | None = None,
                   version: str = "HTTP/1.1") -> bytes:
    out = f"{version} {status} {reason if reason is not None else REASONS.get(status, '')}".rstrip()
    out += "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return out.encode("latin-1") + b"\r\n" + body


def http_date(now: float) -> str:
    """IMF-fixdate of the emulator's clock (packet time; 0 is the epoch)."""
    return datetime.fromtimestamp(max(0.0, now), timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def error_page(status: int, server: str = "nginx") -> bytes:
    """nginx's built-in error page (ngx_http_special_response.c)."""
    title = f"{status} {REASONS.get(status, '')}".rstrip()
    return (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>{server}</center>\r\n"
            "</body>\r\n</html>\r\n").encode()


def error_response(status: int, now: float, keep_alive: bool = False, server: str = "nginx",
                   head: bool = False) -> Response:
    body = error_page(status, server)
    h = Headers([("Date", http_date(now)), ("Content-Type", "text/html"),
                 ("Content-Length", str(len(body))),
                 ("Connection", "keep-alive" if keep_alive else "close")])
    if server:
        h.items.insert(0, ("Server", server))
    return Response("HTTP/1.1", status, REASONS.get(status, ""), h, b"" if head else body)


# --- the path nginx matches locations on ------------------------------------------

def normalize_path(path: str) -> str:
    """nginx's $uri: percent-decoded, `//` merged (merge_slashes on), `.` and `..`
    segments resolved; a `..` above the root is a 400, as in nginx."""
    try:
        raw = unquote_to_bytes(path)
    except Exception:                                   # noqa: BLE001 - never crash on input
        raise HttpError(400, "invalid percent-encoding in the path") from None
    if b"\0" in raw:
        raise HttpError(400, "NUL byte in the path")
    text = raw.decode("utf-8", errors="surrogateescape")
    if not text.startswith("/"):
        text = "/" + text
    out: list[str] = []
    segs = text.split("/")[1:]
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "" and not last:
            continue
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if not out:
                raise HttpError(400, "path climbs above the root")
            out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)
