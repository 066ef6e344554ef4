"""The HTTP/1.x parser over calls as the kernel sends them up (head bytes, length, tail)."""

from ebpf_otlp.signals.net.http1 import Call, Http1Connection, parse_head

HEAD = 512


def call(ts, d, data: bytes) -> Call:
    return Call(ts, d, len(data), data[:HEAD], data[-8:] if len(data) >= 8 else b"")


def summary(conn):
    return [(e.method, e.target, e.status, e.ended_by) for e in conn.take()]


def test_keep_alive_requests_pair_in_order_with_content_length_bodies():
    c = Http1Connection()
    c.feed(call(1, 1, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"))
    c.feed(call(2, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"))
    c.feed(call(3, 1, b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"))
    c.feed(call(4, 1, b"c"))
    c.feed(call(5, 0, b"HTTP/1.1 404 Not Found\r\nContent-Length: 2000\r\n\r\n" + b"x" * 100))
    assert summary(c) == [("GET", "/a", 200, "framing")]
    c.feed(Call(6, 0, 1900, b"x" * HEAD, b"x" * 8))
    done = c.take()
    assert [(e.method, e.target, e.status) for e in done] == [("POST", "/b", 404)]
    assert (done[0].request.start_ns, done[0].response.end_ns, done[0].response.body_bytes) == (3, 6, 2000)
    assert done[0].request.body_bytes == 3 and c.requests_dir == 1


def test_pipelined_requests_in_one_call_get_their_responses_in_order():
    c = Http1Connection()
    c.feed(call(1, 1, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"))
    c.feed(call(2, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
                      b"HTTP/1.1 500 Oops\r\nContent-Length: 1\r\n\r\nB"))
    assert summary(c) == [("GET", "/1", 200, "framing"), ("GET", "/2", 500, "framing")]


def test_chunked_response_ends_at_its_last_chunk_in_a_later_call():
    c = Http1Connection()
    c.feed(call(1, 0, b"GET /c HTTP/1.1\r\n\r\n"))          # we send: a client
    c.feed(call(2, 1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"))
    assert summary(c) == []
    c.feed(Call(3, 1, 9000, b"2000\r\n" + b"y" * 500, b"\r\n0\r\n\r\n"))
    assert summary(c) == [("GET", "/c", 200, "framing")] and c.requests_dir == 0


def test_responses_without_a_body():
    c = Http1Connection()
    for i, (req, resp) in enumerate([(b"HEAD /h HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
                                     (b"GET /n HTTP/1.1\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"),
                                     (b"GET /m HTTP/1.1\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n")]):
        c.feed(call(2 * i, 1, req))
        c.feed(call(2 * i + 1, 0, resp))
    assert [s[2] for s in summary(c)] == [200, 204, 304]


def test_a_response_until_close_and_a_request_never_answered():
    c = Http1Connection()
    c.feed(call(1, 1, b"GET /old HTTP/1.0\r\n\r\n"))
    c.feed(call(2, 0, b"HTTP/1.0 200 OK\r\n\r\nsome body"))
    c.feed(call(3, 0, b"more"))
    assert summary(c) == []
    c.feed(call(4, 1, b"GET /lost HTTP/1.1\r\n\r\n"))   # (a client would not; a test may)
    c.close("close")
    done = c.take()
    assert [(e.target, e.status, e.ended_by) for e in done] == [("/old", 200, "close"), ("/lost", None, "close")]
    assert done[0].response.end_ns == 3 and done[0].version == "1.0"


def test_headers_past_the_copied_bytes_end_at_the_next_message():
    c = Http1Connection()
    big = b"GET /big HTTP/1.1\r\nCookie: " + b"z" * 1000 + b"\r\n\r\n"
    c.feed(call(1, 1, big))
    c.feed(call(2, 0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    c.feed(call(3, 1, b"GET /next HTTP/1.1\r\n\r\n"))
    c.feed(call(4, 0, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"))
    assert summary(c) == [("GET", "/big", 200, "framing"), ("GET", "/next", 201, "framing")]


def test_not_http_is_none():
    assert parse_head(b"\x16\x03\x01\x02\x00") is None
    assert parse_head(b"GETTING there") is None
    assert parse_head(b"GET / HTTP/1.1\r\nHost: b\r\nX: y\r\n\r\n")[1:] == ({"host": "b"}, 33)


def test_routes_fold_ids():
    from ebpf_otlp.signals.net.routes import route_of
    assert route_of("/users/8812/orders?x=1") == "/users/*/orders"
    assert route_of("/o/3f2a9c1b77/items/550e8400-e29b-41d4-a716-446655440000") == "/o/*/items/*"
    assert route_of("/") == "/" and route_of("/v2/api/health") == "/v2/api/health"
    assert route_of("/img/photo123.jpg") == "/img/*"


def test_user_route_patterns_match_before_folding():
    import pytest
    from ebpf_otlp.signals.net.routes import Routes
    r = Routes(["/users/{id}", "/users/{id}/orders/*", "/static/**"])
    assert r.match("/users/8812?x=1") == "/users/{id}" and r.match("/users/8812/orders/9") == "/users/{id}/orders/*"
    assert r.match("/static/css/a.css") == "/static/**" and r.match("/users") == "" and r.match("/users/1/x") == ""
    with pytest.raises(ValueError, match="starts with /"):
        Routes(["users"])
    with pytest.raises(ValueError, match="last segment"):
        Routes(["/a/**/b"])
