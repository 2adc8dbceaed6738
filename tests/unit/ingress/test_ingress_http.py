# ingress.http: HTTP/1.1 requests and responses that arrive in pieces, the
# checks nginx makes before answering 400 (413/414/501/505), building, error
# pages, path normalisation; and the two apps on top: the backend pods' HTTP
# server and the controller without a socket context. Malformed input is an
# answer, never a crash.
from __future__ import annotations

import random

import pytest

from kdp.ingress.backend import BackendApp
from kdp.ingress.http import (HttpError, build_request, error_page, error_response, http_date,
                              normalize_path, parse_request, parse_response)

GET = b"GET /api/items?x=1 HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nUser-Agent: t\r\n\r\n"


def test_complete_request():
    req, used = parse_request(GET)
    assert used == len(GET) and req.method == "GET" and req.target == "/api/items?x=1"
    assert req.path == "/api/items" and req.query == "x=1" and req.version == "HTTP/1.1"
    assert req.host == "shop.example.com" and req.authority == "Shop.Example.com:8080"
    assert req.headers.get("user-agent") == "t" and req.keep_alive and req.body == b""


def test_a_request_split_anywhere_waits_for_the_rest():
    body = b"a=1&b=2"
    raw = b"POST /f HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n" + body
    for cut in range(len(raw)):
        assert parse_request(raw[:cut]) is None, cut
    req, used = parse_request(raw)
    assert req.body == body and used == len(raw)


def test_pipelined_requests_are_taken_one_at_a_time():
    two = GET + b"GET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    first, n = parse_request(two)
    second, m = parse_request(two[n:])
    assert first.path == "/api/items" and second.path == "/b" and not second.keep_alive
    assert n + m == len(two)


def test_chunked_body_and_bare_lf_lines():
    raw = (b"POST /u HTTP/1.1\nHost: h\nTransfer-Encoding: chunked\n\n"
           b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n")
    for cut in range(len(raw) - 1):
        assert parse_request(raw[:cut]) is None, cut
    req, used = parse_request(raw)
    assert req.body == b"Wikipedia" and used == len(raw)


def test_http10_needs_no_host_and_closes_by_default():
    req, _ = parse_request(b"GET / HTTP/1.0\r\n\r\n")
    assert req.host == "" and not req.keep_alive
    req, _ = parse_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert req.keep_alive


def test_absolute_form_target():
    req, _ = parse_request(b"GET http://Other.com:81/p/q?z HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert req.host == "other.com" and req.path == "/p/q" and req.query == "z"


@pytest.mark.parametrize("raw, status", [
    (b"GET /\r\n\r\n", 400),                                         # HTTP/0.9-style line
    (b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
    (b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET nopath HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),                                # 1.1 without Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),                    # space before the colon
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/1.x\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET /" + b"a" * 9000, 414),                                   # too long even before the end
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"y" * 40000 + b"\r\n\r\n", 400),
])
def test_malformed_requests_get_the_status_nginx_answers(raw, status):
    with pytest.raises(HttpError) as e:
        parse_request(raw)
    assert e.value.status == status


def test_a_bad_request_line_is_refused_before_the_headers_end():
    assert parse_request(b"GET /x HTTP/1.1\r\nHost: h\r\n") is None      # fine so far: wait
    with pytest.raises(HttpError) as e:
        parse_request(b"hello oracle\n")                                  # not HTTP: 400 at once
    assert e.value.status == 400
    out, close, _ = BackendApp("ns/p").stream({}, b"hello oracle\n", 0.0)
    assert parse_response(out)[0].status == 400 and close


def test_random_garbage_never_crashes():
    rng = random.Random(7)
    seeds = [GET, b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"]
    for _ in range(3000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(base))
            base[i] = rng.randrange(256)
        raw = bytes(base[:rng.randint(0, len(base))])
        try:
            parse_request(raw)
        except HttpError as e:
            assert 400 <= e.status < 600
        try:
            parse_response(raw, eof=rng.random() < 0.5)
        except HttpError as e:
            assert e.status == 502


def test_responses_by_length_chunked_and_until_close():
    r, n = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA")
    assert (r.status, r.reason, r.body, n) == (200, "OK", b"hi", 40)
    chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert parse_response(chunked[:-3]) is None
    assert parse_response(chunked)[0].body == b"abc"
    raw = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    assert parse_response(raw) is None
    assert parse_response(raw, eof=True)[0].body == b"until the end"
    assert parse_response(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")[0].body == b""
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", head_request=True)[0].body == b""
    with pytest.raises(HttpError) as e:
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", eof=True)
    assert e.value.status == 502
    with pytest.raises(HttpError):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_building_round_trips():
    raw = build_request("PUT", "/x", [("Host", "h"), ("Content-Length", "3")], b"abc")
    req, _ = parse_request(raw)
    assert req.encode() == raw and req.body == b"abc"
    resp = error_response(404, 0.0, keep_alive=True)
    again, _ = parse_response(resp.encode())
    assert again.status == 404 and again.headers.get("Connection") == "keep-alive"
    assert again.headers.get("Server") == "nginx" and again.body == error_page(404)


def test_nginx_error_page_and_date():
    page = error_page(404)
    assert len(page) == 146 and b"<center><h1>404 Not Found</h1></center>" in page  # as ingress-nginx
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(86400 * 365.25 * 30) .endswith("GMT")


@pytest.mark.parametrize("raw, norm", [
    ("/", "/"), ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/../c", "/a/c"), ("/a/b/..", "/a/"),
    ("/%61pi/%2Fx", "/api//x".replace("//", "/")), ("/api/", "/api/"), ("/.", "/"),
])
def test_path_normalisation(raw, norm):
    assert normalize_path(raw) == norm


@pytest.mark.parametrize("raw", ["/..", "/a/../..", "/%00"])
def test_bad_paths_are_400(raw):
    with pytest.raises(HttpError) as e:
        normalize_path(raw)
    assert e.value.status == 400


# --- the backend pods' app -----------------------------------------------------------------

def test_backend_answers_a_split_request_with_its_pod_name():
    app, conn = BackendApp("backend/svc-a-1"), {}
    raw = (b"GET /api/items HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 198.51.100.20\r\n"
           b"X-Forwarded-Proto: http\r\nX-Other: no\r\n\r\n")
    out, close, detail = app.stream(conn, raw[:20], 0.0)
    assert out == b"" and not close and "incomplete" in detail
    out, close, detail = app.stream(conn, raw[20:], 0.0)
    resp, _ = parse_response(out)
    assert resp.status == 200 and not close and resp.headers.get("X-Pod") == "backend/svc-a-1"
    body = resp.body.decode()
    assert body.startswith("pod backend/svc-a-1\nrequest: GET /api/items HTTP/1.1\n")
    assert "x-forwarded-for: 198.51.100.20" in body and "x-forwarded-proto: http" in body
    assert "x-other" not in body
    assert app.served[0]["request_line"] == "GET /api/items HTTP/1.1"


def test_backend_keep_alive_pipelining_and_close():
    app, conn = BackendApp("ns/p"), {}
    two = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    out, close, _ = app.stream(conn, two, 0.0)
    first, n = parse_response(out)
    second, _ = parse_response(out[n:])
    assert b"GET /1" in first.body and b"GET /2" in second.body and close
    assert second.headers.get("Connection") == "close"


def test_backend_answers_garbage_with_400_and_closes():
    out, close, detail = BackendApp("ns/p").stream({}, b"kdp probe\n\n", 0.0)
    assert parse_response(out)[0].status == 400 and close and "400" in detail


def test_controller_without_a_socket_context_answers_instead_of_crashing():
    from kdp.ingress.controller import ControllerApp
    from kdp.ingress.rules import from_cluster
    from kdp.k8s import demo_cluster
    c = demo_cluster()
    app = ControllerApp(c, from_cluster(c), "ingress-nginx/x")
    out, close, _ = app.stream({}, b"GET /api HTTP/1.1\r\nHost: shop.example.com\r\n\r\n", 0.0)
    assert parse_response(out)[0].status == 502 and not close
    out, close, _ = app.stream({}, b"GET / HTTP/1.1\r\nHost: nowhere\r\n\r\n", 0.0)
    assert parse_response(out)[0].status == 404
    out, close, _ = app.stream({}, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 0.0)
    assert parse_response(out)[0].status == 400 and close
    out, close, _ = app.stream({}, b"GET /../x HTTP/1.1\r\nHost: shop.example.com\r\n\r\n", 0.0)
    assert parse_response(out)[0].status == 400 and close
