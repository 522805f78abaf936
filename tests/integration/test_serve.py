"""``loadgen serve`` as a real process on a free port, asked by real clients: every route, keep-alive
and pipelining on a raw socket, SSE through aiohttp, the error statuses, a stall, and how it stops.

Timings are checked for order and with generous bounds only: the machine is shared.
"""

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest

from loadgen.errors import ExitCode

from _helpers import start_serve

@pytest.fixture
def serve(cli):
    """Start servers through the ``cli`` fixture, which kills and reaps them whatever happens."""
    return lambda *args: start_serve(cli, *args)


def request(url, method="GET", body=None, headers=None):
    """(status, headers, body bytes) of one request; 4xx/5xx answers returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def read_response(f):
    """One response from a socket's file: (status, headers dict, body), Content-Length framed."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), headers, body


def test_ping_drafts_and_kickoff(serve):
    s = serve("--flow-param", "processing_time_base=0.01", "--flow-param", "failure_rate=0", "--seed", "3")
    assert request(s.url + "/ping")[::2] == (200, b"ok\n")

    status, _, body = request(s.url + "/drafts/7")
    assert status == 200 and json.loads(body)["id"] == 7
    status, headers, body = request(s.url + "/drafts", "POST", b'{"title": "mine"}')
    new_id = json.loads(body)["id"]
    assert status == 201 and headers["Location"] == f"/drafts/{new_id}"
    assert json.loads(request(s.url + f"/drafts/{new_id}")[2]) == {"id": new_id, "draft": {"title": "mine"}}
    assert request(s.url + "/drafts/999999")[0] == 404
    assert request(s.url + "/drafts", "POST", b"{not json")[0] == 400

    status, _, body = request(s.url + "/kickoff", "POST", b'{"topic_title": "Served"}')
    result = json.loads(body)
    assert status == 200 and result["state"] == "finalized" and result["output"]["topic_title"] == "Served"
    assert request(s.url + "/kickoff", "POST")[0] == 200  # no body: the default inputs


def test_a_failed_flow_is_422_with_its_stage(serve):
    s = serve("--flow-param", "processing_time_base=0.01", "--flow-param", "failure_rate=1")
    status, _, body = request(s.url + "/kickoff", "POST", b"{}")
    result = json.loads(body)
    assert status == 422 and result["state"] == "failed" and result["reason"].startswith("simulated:")
    status, _, body = request(s.url + "/kickoff", "POST", b"[1, 2]")  # not a mapping: the flow says so
    assert status == 422 and json.loads(body)["failed_stage"] == "input_validation"


def test_keep_alive_pipelining_and_connection_close(serve):
    s = serve("--flow-param", "processing_time_base=0.01", "--flow-param", "failure_rate=0")
    with s.socket() as sock, sock.makefile("rb") as f:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[::2] == (200, b"ok\n")
        sock.sendall(b"GET /drafts/1 HTTP/1.1\r\nHost: x\r\n\r\n")  # the same socket, reused
        assert read_response(f)[0] == 200
        # Pipelined, with a slow kickoff first: the answers come back in the order asked.
        sock.sendall(b"POST /kickoff HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                     b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /drafts/2 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(f)
        assert status == 200 and json.loads(body)["state"] == "finalized"
        assert read_response(f)[2] == b"ok\n"
        assert json.loads(read_response(f)[2])["id"] == 2
        status, headers, body = read_response(f)
        assert body == b"ok\n" and headers["connection"] == "close"
        assert f.read() == b""  # closed after the Connection: close answer; the request after it ignored


@pytest.mark.parametrize("raw, status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
    (b"POST /drafts HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
    (b"DELETE /drafts/1 HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /stream?events=0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
])
def test_error_statuses(serve, raw, status):
    s = serve()
    with s.socket() as sock, sock.makefile("rb") as f:
        sock.sendall(raw)
        got, headers, body = read_response(f)
        assert got == status and "error" in json.loads(body)
        if status in (400, 413) and b"/stream" not in raw:
            assert headers["connection"] == "close" and f.read() == b""


def test_a_chunked_body_over_the_bound_is_413(serve):
    s = serve()
    with s.socket() as sock, sock.makefile("rb") as f:
        sock.sendall(b"POST /drafts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(20):  # 1.25 MiB: past the 1 MiB bound
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed before the last chunks
        assert read_response(f)[0] == 413


async def _sse_events(url, headers=None, method="GET"):
    """[(event name, data, seconds since the request)] of one SSE answer, read with aiohttp."""
    import aiohttp

    events, t0 = [], time.monotonic()
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=headers) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
            assert r.headers["Transfer-Encoding"] == "chunked"
            name = None
            async for line in r.content:
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, line[6:], time.monotonic() - t0))
    return events


def test_kickoff_as_sse_one_event_per_stage_then_the_result(serve):
    s = serve("--flow-param", "processing_time_base=0.01", "--flow-param", "failure_rate=0",
              "--flow-param", "style_loop_probability=0")
    events = asyncio.run(_sse_events(s.url + "/kickoff", {"Accept": "text/event-stream"}, "POST"))
    names = [n for n, _, _ in events]
    assert names == ["stage"] * 6 + ["result"]
    stages = [json.loads(d)["stage"] for n, d, _ in events if n == "stage"]
    assert stages == ["input_validation", "research", "audience_align", "draft_generation", "style_validation",
                      "quality_check"]
    result = json.loads(events[-1][1])
    assert result["state"] == "finalized" and list(result["stage_timings_us"]) == stages


def test_stream_counts_and_spacing(serve):
    s = serve()
    events = asyncio.run(_sse_events(s.url + "/stream?events=5&first_ms=300&gap_ms=100&bytes=200"))
    assert [n for n, _, _ in events] == ["tick"] * 5
    assert all(len(d) == 200 for _, d, _ in events)
    times = [t for _, _, t in events]
    assert times == sorted(times)
    assert 0.25 <= times[0] < 3.0  # first event ≈ 300 ms: never early, loosely never very late
    assert 0.35 <= times[-1] - times[0] < 3.0  # four gaps of 100 ms


def test_stall_delays_a_concurrent_request(serve):
    s = serve()
    stalled = threading.Thread(target=request, args=(s.url + "/admin/stall?ms=1000", "POST"))
    t0 = time.monotonic()
    stalled.start()
    time.sleep(0.2)  # the stall has begun
    assert request(s.url + "/ping")[0] == 200
    waited = time.monotonic() - t0
    stalled.join(30)
    assert waited >= 0.9  # the ping was answered only after the stall ended
    assert request(s.url + "/admin/stall", "POST")[0] == 400  # no ?ms=


def test_stall_option_stalls_once(serve):
    s = serve("--stall", "1s:1s")
    time.sleep(1.2)  # inside the stall (the listening line came before the 1 s started)
    t0 = time.monotonic()
    assert request(s.url + "/ping")[0] == 200
    assert time.monotonic() - t0 >= 0.3


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, ExitCode.SIGTERM), (signal.SIGINT, ExitCode.SIGINT)])
def test_a_signal_stops_it_cleanly_even_mid_stream(serve, signum, code):
    s = serve()
    with s.socket() as sock:
        sock.sendall(b"GET /stream?events=100&first_ms=0&gap_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)  # the stream has begun
        s.proc.send_signal(signum)
        assert s.proc.wait(15) == code
    assert s.proc.stderr.read() == ""  # no traceback, no warning


def test_port_in_use_and_bad_input_are_one_line_exit_2(serve, cli):
    s = serve()
    for args in (["--port", str(s.port)], ["--host", "no.such.host.invalid", "--port", "0"],
                 ["--port", "0", "--flow-param", "failure_rate=2"], ["--port", "70000"],
                 ["--port", "0", "--stall", "soon"]):
        code, out, err = cli.run("serve", *args, timeout=60)
        assert code == ExitCode.USAGE and out == "", args
        assert len(err.splitlines()) == 1 and err.startswith("loadgen: error: "), (args, err)
