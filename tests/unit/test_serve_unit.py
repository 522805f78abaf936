"""``loadgen serve`` without sockets: routing, query parsing, the draft store, response bytes, and a
:class:`~loadgen.http.serve.Connection` fed bytes through a fake transport (pipelining, errors)."""

import asyncio
import json
import re

import pytest

from loadgen.errors import UsageError
from loadgen.http import serve as sv


# ---------------------------------------------------------------- routing and queries


@pytest.mark.parametrize("method, path, expected", [
    ("GET", "/ping", ("ping", None)),
    ("POST", "/kickoff", ("kickoff", None)),
    ("POST", "/drafts", ("create_draft", None)),
    ("GET", "/drafts/42", ("get_draft", "42")),
    ("GET", "/stream", ("stream", None)),
    ("POST", "/admin/stall", ("stall", None)),
])
def test_routes(method, path, expected):
    assert sv.route(method, path) == expected


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/", 404), ("GET", "/pingx", 404), ("GET", "/admin", 404), ("GET", "/drafts", 405),
    ("POST", "/ping", 405), ("HEAD", "/ping", 405), ("PUT", "/drafts/1", 405), ("GET", "/kickoff", 405),
])
def test_unknown_paths_and_methods(method, path, status):
    with pytest.raises(sv.HttpError) as e:
        sv.route(method, path)
    assert e.value.status == status
    if status == 405:
        assert dict(e.value.headers)["Allow"]


def test_stream_query_defaults_values_and_errors():
    assert sv.parse_query("", sv.STREAM_QUERY) == {"events": 20, "first_ms": 200.0, "gap_ms": 10.0, "bytes": 64}
    q = sv.parse_query("events=3&gap_ms=2.5&bytes=0&first_ms=0", sv.STREAM_QUERY)
    assert q == {"events": 3, "first_ms": 0.0, "gap_ms": 2.5, "bytes": 0}
    for bad in ("events=0", "events=1.5", "gap_ms=-1", "bytes=x", "first_ms=", "evnts=2", "events=2&events=3",
                f"events={sv.MAX_STREAM_EVENTS + 1}", "gap_ms=inf"):
        with pytest.raises(sv.HttpError) as e:
            sv.parse_query(bad, sv.STREAM_QUERY)
        assert e.value.status == 400, bad


def test_json_body():
    assert sv.json_body(b"") is None and sv.json_body(b"  \n") is None
    assert sv.json_body(b'{"a": 1}') == {"a": 1}
    for bad in (b"{", b"\xff\xfe", b"nope"):
        with pytest.raises(sv.HttpError):
            sv.json_body(bad)


def test_parse_stall():
    assert sv.parse_stall("5s:1s") == (5.0, 1.0)
    assert sv.parse_stall("1m:500ms") == (60.0, 0.5)
    for bad in ("5s", "x:1s", "5s:", "5s:-1s"):
        with pytest.raises(UsageError):
            sv.parse_stall(bad)


def test_make_flow_forces_async_io_and_takes_the_seed():
    flow = sv.make_flow(["failure_rate=0.5"], 7)
    assert flow.async_io and flow.seed == 7 and flow.failure_rate == 0.5
    assert sv.make_flow(["seed=1"], 7).seed == 1  # an explicit flow param wins over --seed
    with pytest.raises(UsageError):
        sv.make_flow(["no_such_param=1"], None)
    with pytest.raises(UsageError):
        sv.make_flow(["failure_rate"], None)


# ---------------------------------------------------------------- data


def test_drafts_keep_the_seeds_and_drop_the_oldest_posted():
    d = sv.Drafts(limit=3)
    assert json.loads(d.get(0))["id"] == 0 and d.get(sv.SEED_DRAFTS) is None
    ids = [d.add({"n": i}) for i in range(5)]
    assert ids == list(range(sv.SEED_DRAFTS, sv.SEED_DRAFTS + 5))
    assert d.get(ids[0]) is None and d.get(ids[1]) is None
    assert json.loads(d.get(ids[4])) == {"id": ids[4], "draft": {"n": 4}}
    assert d.get(sv.SEED_DRAFTS - 1) is not None  # seeds are never dropped


def test_encode_and_sse():
    assert sv.PING == (b"HTTP/1.1 200 OK\r\nServer: loadgen\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: 3\r\n\r\nok\n")
    assert sv.PING_CLOSE.endswith(b"Connection: close\r\n\r\nok\n")
    assert sv.encode(404, b"{}", headers=[("X", "y")]).startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert sv.sse("tick", "a", 3) == b"event: tick\nid: 3\ndata: a\n\n"
    assert sv.url_of(("::1", 80, 0, 0)) == "http://[::1]:80" and sv.url_of(("127.0.0.1", 80)) == "http://127.0.0.1:80"
    assert sv.is_loopback("127.0.0.2") and sv.is_loopback("::1") and not sv.is_loopback("0.0.0.0")


# ---------------------------------------------------------------- a connection through a fake transport


class FakeTransport:
    def __init__(self):
        self.out, self.closed, self.paused = bytearray(), False, False

    def write(self, data):
        assert not self.closed, "written after close"
        self.out += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


class SlowFlow:
    """A flow whose akickoff takes a loop turn, so requests pipelined behind it must queue."""

    async def akickoff(self, inputs=None, on_stage=None):
        from loadgen.workload.flow import FlowResult

        await asyncio.sleep(0.01)
        if on_stage:
            on_stage("input_validation", {"input_validation": 5})
        return FlowResult("finalized", output={"inputs": inputs})


def converse(data, flow=None):
    """Feed ``data`` to a Connection on a loop, let its tasks finish; the transport."""

    async def go():
        conn = sv.Connection(sv.App(flow or SlowFlow()), set())
        t = FakeTransport()
        conn.connection_made(t)
        conn.data_received(data)
        while conn.task is not None:
            await conn.task
        return t

    return asyncio.run(go())


def statuses(out):
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", bytes(out))]


def test_pipelined_answers_keep_request_order_behind_a_slow_one():
    t = converse(b"GET /ping HTTP/1.1\r\n\r\n"
                 b"POST /kickoff HTTP/1.1\r\nContent-Length: 8\r\n\r\n{\"a\": 1}"
                 b"GET /nope HTTP/1.1\r\n\r\n"
                 b"GET /drafts/3 HTTP/1.1\r\n\r\n")
    assert statuses(t.out) == [200, 200, 404, 200]
    out = bytes(t.out)
    assert out.index(b'"inputs":{"a":1}') < out.index(b"no such path") < out.index(b'"id":3')
    assert not t.closed


def test_a_parse_error_is_answered_after_the_queued_requests_then_closed():
    t = converse(b"POST /kickoff HTTP/1.1\r\nContent-Length: 0\r\n\r\nGARBAGE\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
    assert statuses(t.out) == [200, 400] and t.closed


def test_connection_close_and_http10():
    t = converse(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\nGET /ping HTTP/1.1\r\n\r\n")
    assert statuses(t.out) == [200] and t.closed
    t = converse(b"GET /ping HTTP/1.0\r\n\r\n")
    assert t.out.endswith(b"Connection: close\r\n\r\nok\n") and t.closed
    t = converse(b"GET /stream?events=2&first_ms=0&gap_ms=0&bytes=4 HTTP/1.0\r\n\r\n")
    assert b"Transfer-Encoding" not in t.out and t.out.count(b"event: tick") == 2 and t.closed


def test_streams_are_chunked_and_end_with_the_last_chunk():
    t = converse(b"GET /stream?events=3&first_ms=0&gap_ms=1&bytes=10 HTTP/1.1\r\n\r\n"
                 b"POST /kickoff HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n")
    out = bytes(t.out)
    assert out.count(b"Transfer-Encoding: chunked") == 2 and out.count(b"\r\n0\r\n\r\n") == 2
    assert out.count(b"event: tick") == 3 and b"event: stage" in out and b"event: result" in out
    assert not t.closed


def test_body_limits_413():
    t = converse(b"POST /drafts HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (sv.MAX_BODY_BYTES + 1))
    assert statuses(t.out) == [413] and t.closed
    big = b"x" * (sv.MAX_BODY_BYTES + 1)
    t = converse(b"POST /drafts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    assert statuses(t.out) == [413] and t.closed


def test_a_handler_bug_is_a_500_and_that_connection_closes():
    class Broken:
        async def akickoff(self, inputs=None, on_stage=None):
            raise RuntimeError("bug")

    t = converse(b"POST /kickoff HTTP/1.1\r\n\r\n", Broken())
    assert statuses(t.out) == [500] and t.closed
