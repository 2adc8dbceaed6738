# ingress.backend: the small HTTP server kdp runs behind the container ports of
# pods that back an Ingress (instead of the echo server): it reads HTTP/1.1
# requests that may span segments (keep-alive and pipelining included) and
# answers each with 200 and a plain-text body naming the pod, the request line
# and the forwarding headers it saw; a malformed request gets 400 and the
# connection is closed. A socket app (net.sockets' stream interface).
from __future__ import annotations

from .http import Headers, HttpError, Request, build_response, http_date, parse_request

SHOWN = ("host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto",
         "x-real-ip", "x-request-id", "x-original-forwarded-for")
SERVER = "kdp-backend"


class BackendApp:
    """HTTP on one pod: `pod NS/NAME` first in every body."""

    name = "http-backend"

    def __init__(self, pod_key: str):
        self.pod_key = pod_key
        self.served: list[dict] = []        # every request answered (for tests and reports)

    def datagram(self, payload: bytes, src, dst, now: float):
        return payload, f"echoed {len(payload)} bytes (the HTTP backend serves TCP)"

    def body(self, req: Request) -> bytes:
        lines = [f"pod {self.pod_key}", f"request: {req.request_line}"]
        lines += [f"{k.lower()}: {v}" for k, v in req.headers if k.lower() in SHOWN]
        return ("\n".join(lines) + "\n").encode()

    def answer(self, req: Request, now: float) -> bytes:
        body = self.body(req)
        h = Headers([("Server", SERVER), ("Date", http_date(now)),
                     ("Content-Type", "text/plain; charset=utf-8"),
                     ("Content-Length", str(len(body))), ("X-Pod", self.pod_key),
                     ("Connection", "keep-alive" if req.keep_alive else "close")])
        self.served.append({"pod": self.pod_key, "request_line": req.request_line,
                            "headers": req.headers.as_list(), "status": 200})
        return build_response(200, h.items, b"" if req.method == "HEAD" else body)

    def stream(self, conn: dict, data: bytes, now: float):
        buf = conn.get("http_buf", b"") + data
        out, close, notes = b"", False, []
        while buf:
            try:
                got = parse_request(buf)
            except HttpError as e:
                body = f"{e.status} {e.why}\n".encode()
                h = [("Server", SERVER), ("Date", http_date(now)), ("Content-Type", "text/plain"),
                     ("Content-Length", str(len(body))), ("Connection", "close")]
                out += build_response(e.status, h, body)
                notes.append(f"HTTP {e.status}: {e.why}; closing")
                close, buf = True, b""
                break
            if got is None:
                break
            req, used = got
            buf = buf[used:]
            out += self.answer(req, now)
            notes.append(f"HTTP {req.request_line} -> 200 from {self.pod_key}")
            if not req.keep_alive:
                close, buf = True, b""
                break
        conn["http_buf"] = buf
        if not notes:
            notes.append(f"HTTP: {len(buf)} bytes buffered, request incomplete")
        return out, close, "; ".join(notes)
