"""``loadgen serve``: the embedded AI Writing Flow over HTTP/1.1, the default target of ``--url``.

One process, one event loop (uvloop when installed, as the async slots choose:
:func:`loadgen.engine.aslots.loop_kind`), an :class:`asyncio.Protocol` per connection and
``httptools`` (llhttp) to parse requests — no hand-written parser. Keep-alive by default
(``Connection: close`` and HTTP/1.0 honoured); pipelined requests are answered in order, one at a
time per connection; request bodies need a Content-Length or chunked framing and are bounded
(:data:`MAX_BODY_BYTES`).

Routes (:data:`ROUTES`; other paths 404, another method 405, a malformed request 400 and close,
a body past the bound 413 and close):

``POST /kickoff``
    Runs the flow (``akickoff``; its LLM waits are awaited, its CPU work blocks the loop as a real
    async service's does) with the JSON body as inputs (empty: the defaults). 200 and
    ``FlowResult.to_dict()`` when it finalized; **422** and the same dict (``failed_stage``,
    ``reason``) when it failed, so that a load test counts a failed flow by its status. With
    ``Accept: text/event-stream``: a chunked SSE stream, one ``event: stage`` per stage pass as it
    completes, then ``event: result``; the status is then 200 whatever the outcome (it is sent
    before the flow runs): the result event's ``state`` says.
``GET /drafts/{id}`` / ``POST /drafts``
    An in-memory draft store: 200 and the draft, or 404; a JSON body stored with a new id, 201.
    Ids 0..99 are seeded and never dropped; stored drafts are bounded (:data:`MAX_DRAFTS`, the
    oldest dropped), so a read/write mix works out of the box and for hours.
``GET /ping``
    200 ``ok\\n``, pre-built: the cheapest request, for throughput benchmarks.
``GET /stream?events=N&first_ms=F&gap_ms=G&bytes=B``
    SSE: event *k* (0-based) at ``F + k·G`` ms after the request, each scheduled against the
    stream's start on the loop's monotonic clock (no drift from sleep after sleep), with a data
    line of ``B`` bytes. Defaults :data:`STREAM_DEFAULTS`.
``POST /admin/stall?ms=M``
    Blocks the whole server (its one loop: no accept, no byte answered) for M ms, then 200 — a
    server stall for testing coordinated-omission correction; ``--stall AT:FOR`` schedules one.
"""

from __future__ import annotations

import asyncio
import collections
import http
import ipaddress
import itertools
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

import httptools

from ..config import check_int, check_number, parse_duration
from ..errors import ExitCode, UsageError

log = logging.getLogger("loadgen.http")

MAX_BODY_BYTES = 1 << 20  # a request body past this: 413 (nothing here needs more)
MAX_PIPELINED = 64  # requests queued behind a busy one on a connection before it stops reading
MAX_DRAFTS = 10_000  # drafts kept from POST /drafts; the oldest goes first
SEED_DRAFTS = 100  # ids 0..99 exist from the start, for GET /drafts/{id} out of the box
STREAM_DEFAULTS = {"events": 20, "first_ms": 200.0, "gap_ms": 10.0, "bytes": 64}
MAX_STREAM_EVENTS = 100_000
MAX_STREAM_MS = 3_600_000.0  # an hour: a test's stream, not a feed
MAX_EVENT_BYTES = 1 << 16
MAX_STALL_MS = 60_000.0
# Connections waiting to be accepted: 1,000 streams opened at once must not overflow the default
# (100), or the kernel drops SYNs and those clients retry a second later — a TTFT that is ours.
LISTEN_BACKLOG = 4096
SERVER = b"loadgen"
TITLE = "loadgen: serve"

# path -> {method: App method}; GET /drafts/{id} is matched by prefix in route().
ROUTES = {
    "/ping": {"GET": "ping"},
    "/kickoff": {"POST": "kickoff"},
    "/drafts": {"POST": "create_draft"},
    "/stream": {"GET": "stream"},
    "/admin/stall": {"POST": "stall"},
}
DRAFT_PREFIX = "/drafts/"


# ------------------------------------------------------------------ HTTP pieces (pure)


class HttpError(Exception):
    """An answer other than success: ``status``, a one-line ``message`` (the JSON body's ``error``)
    and extra ``headers`` (e.g. ``Allow`` on a 405)."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, tuple(headers)


@dataclass(slots=True)
class Request:
    """One parsed request. ``path``/``query``: the URL split (query without ``?``, "" if none);
    ``accept``: the Accept header ("" if none); ``keep_alive``: the connection stays open after the
    answer (HTTP/1.1 without ``Connection: close``, or HTTP/1.0 with keep-alive); ``http11``: a
    chunked answer is allowed."""

    method: str
    path: str
    query: str = ""
    body: bytes = b""
    accept: str = ""
    keep_alive: bool = True
    http11: bool = True


@dataclass(frozen=True)
class Stream:
    """A streamed (SSE, chunked) answer: ``produce(out)`` is awaited after the headers are sent;
    it calls ``out.send(bytes)`` per event and may ``await out.drain()`` for flow control."""

    produce: Callable


def encode(status, body=b"", content_type="application/json", keep_alive=True, headers=()):
    """A complete HTTP/1.1 response with a Content-Length, as bytes."""
    head = [b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode()), b"Server: " + SERVER,
            b"Content-Type: " + content_type.encode(), b"Content-Length: %d" % len(body)]
    head += [f"{k}: {v}".encode() for k, v in headers]
    if not keep_alive:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def stream_head(chunked):
    """The head of a streamed answer: chunked on HTTP/1.1; on HTTP/1.0 the body ends at close."""
    head = [b"HTTP/1.1 200 OK", b"Server: " + SERVER, b"Content-Type: text/event-stream", b"Cache-Control: no-cache"]
    head.append(b"Transfer-Encoding: chunked" if chunked else b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n"


def sse(event, data, event_id=None):
    """One server-sent event; ``data``: text or bytes on one line."""
    if isinstance(data, str):
        data = data.encode()
    head = b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: %d\n" % event_id
    return head + b"data: " + data + b"\n\n"


def as_json(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def reply(req, status, obj, headers=()):
    """A JSON answer to ``req``."""
    return encode(status, as_json(obj), keep_alive=req.keep_alive, headers=headers)


PING = encode(200, b"ok\n", "text/plain")
PING_CLOSE = encode(200, b"ok\n", "text/plain", keep_alive=False)


def route(method, path):
    """``(App method name, path argument or None)`` for a request; :class:`HttpError` 404 for an
    unknown path, 405 (with ``Allow``) for a known path asked with another method."""
    methods = ROUTES.get(path)
    arg = None
    if methods is None and path.startswith(DRAFT_PREFIX):
        methods, arg = {"GET": "get_draft"}, path[len(DRAFT_PREFIX):]
    if methods is None:
        raise HttpError(404, f"no such path: {path}")
    name = methods.get(method)
    if name is None:
        allow = ", ".join(sorted(methods))
        raise HttpError(405, f"{method} {path}: method not allowed (allowed: {allow})", [("Allow", allow)])
    return name, arg


def parse_query(query, spec):
    """The query string's parameters, checked against ``spec`` ``{name: (default, low, high, kind)}``
    (``kind``: int or float); absent ones take their default. :class:`HttpError` 400 for an unknown
    name, a repeated one or a bad value."""
    out = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if name not in spec:
            raise HttpError(400, f"unknown query parameter {name!r} (known: {', '.join(spec)})")
        if name in out:
            raise HttpError(400, f"query parameter {name!r} given twice")
        _, low, high, kind = spec[name]
        try:
            if kind is int:
                out[name] = check_int(value, name, low, high)
            else:
                out[name] = check_number(value, name, low, high, low_open=False)
        except UsageError as e:
            raise HttpError(400, str(e)) from None
    for name, (default, *_) in spec.items():
        out.setdefault(name, default)
    return out


STREAM_QUERY = {
    "events": (STREAM_DEFAULTS["events"], 1, MAX_STREAM_EVENTS, int),
    "first_ms": (STREAM_DEFAULTS["first_ms"], 0.0, MAX_STREAM_MS, float),
    "gap_ms": (STREAM_DEFAULTS["gap_ms"], 0.0, MAX_STREAM_MS, float),
    "bytes": (STREAM_DEFAULTS["bytes"], 0, MAX_EVENT_BYTES, int),
}
STALL_QUERY = {"ms": (None, 1.0, MAX_STALL_MS, float)}


def json_body(body):
    """The request body as JSON (None when empty); :class:`HttpError` 400 when it is not JSON."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as e:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
        raise HttpError(400, f"body is not JSON: {e}") from None


def stall_server(seconds):
    """Block this thread — the server's only loop — for ``seconds``: nothing is accepted, read or
    answered meanwhile, as when a real server stops the world (a GC pause, a swap storm)."""
    time.sleep(seconds)


# ------------------------------------------------------------------ the application


class Drafts:
    """The draft store: ids 0..SEED_DRAFTS-1 seeded and kept for good (a read mix must not start
    404ing after 10,000 writes); posted drafts kept up to :data:`MAX_DRAFTS`, oldest dropped. Each
    draft is kept as its encoded JSON answer body: a read encodes nothing."""

    def __init__(self, limit=MAX_DRAFTS):
        self.limit = limit
        self.seeded = {i: as_json({"id": i, "title": f"Draft {i}", "platform": "LinkedIn",
                                   "body": f"Seed draft {i} of the AI Writing Flow. " * 4}) for i in range(SEED_DRAFTS)}
        self.posted = collections.OrderedDict()
        self.ids = itertools.count(SEED_DRAFTS)

    def get(self, draft_id):
        """The draft's JSON bytes, or None."""
        return self.seeded.get(draft_id) or self.posted.get(draft_id)

    def add(self, draft):
        """Store ``draft`` (any JSON value) under a new id; returns the id."""
        draft_id = next(self.ids)
        self.posted[draft_id] = as_json({"id": draft_id, "draft": draft})
        if len(self.posted) > self.limit:
            self.posted.popitem(last=False)
        return draft_id


class App:
    """The routes' handlers over one flow and one draft store. :meth:`handle` returns a complete
    response (bytes), a coroutine that returns one, or a :class:`Stream`."""

    def __init__(self, flow):
        self.flow = flow
        self.drafts = Drafts()

    def handle(self, req):
        try:
            name, arg = route(req.method, req.path)
            handler = getattr(self, name)
            return handler(req) if arg is None else handler(req, arg)
        except HttpError as e:
            return reply(req, e.status, {"error": e.message}, e.headers)

    def ping(self, req):
        return PING if req.keep_alive else PING_CLOSE

    def get_draft(self, req, arg):
        body = self.drafts.get(int(arg)) if arg.isascii() and arg.isdigit() else None
        if body is None:
            raise HttpError(404, f"no draft {arg!r}")
        return encode(200, body, keep_alive=req.keep_alive)

    def create_draft(self, req):
        draft_id = self.drafts.add(json_body(req.body))
        return reply(req, 201, {"id": draft_id}, [("Location", f"{DRAFT_PREFIX}{draft_id}")])

    def stall(self, req):
        ms = parse_query(req.query, STALL_QUERY)["ms"]
        if ms is None:
            raise HttpError(400, "ms: expected ?ms=M, the stall in ms")
        stall_server(ms / 1000.0)
        return reply(req, 200, {"stalled_ms": ms})

    def stream(self, req):
        q = parse_query(req.query, STREAM_QUERY)

        async def produce(out):
            loop = asyncio.get_running_loop()
            start = loop.time()
            for k in range(q["events"]):
                # Against the start, not the previous event: a late wake-up does not delay the rest.
                due = start + (q["first_ms"] + k * q["gap_ms"]) / 1000.0
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                head = b"%d " % k
                out.send(sse("tick", head + b"x" * max(0, q["bytes"] - len(head)), k))
                await out.drain()

        return Stream(produce)

    def kickoff(self, req):
        inputs = json_body(req.body)
        if "text/event-stream" in req.accept:
            return Stream(lambda out: self._kickoff_events(inputs, out))
        return self._kickoff_json(req, inputs)

    async def _kickoff_json(self, req, inputs):
        result = await self.flow.akickoff(inputs)
        return reply(req, 200 if result.ok else 422, result.to_dict())

    async def _kickoff_events(self, inputs, out):
        passes = collections.Counter()
        last_us = {}
        t0 = time.perf_counter()

        def on_stage(stage, timings_us):
            # timings_us sums a stage's passes (style loops): this pass is the growth since the last.
            passes[stage] += 1
            pass_us = timings_us[stage] - last_us.get(stage, 0)
            last_us[stage] = timings_us[stage]
            out.send(sse("stage", as_json({"stage": stage, "pass": passes[stage], "wall_us": pass_us,
                                           "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)})))

        result = await self.flow.akickoff(inputs, on_stage=on_stage)
        out.send(sse("result", as_json(result.to_dict())))


# ------------------------------------------------------------------ the connection


class _StopParsing(Exception):
    """Raised in a parser callback to stop at once (feed_data raises a parser error for it)."""


class Connection(asyncio.Protocol):
    """One client connection: feeds bytes to httptools, answers requests in arrival order.

    A request whose handler answers at once is answered inside ``data_received``; one that must
    wait (a kickoff, a stream) runs as a task, and requests pipelined behind it queue until it has
    answered (reading pauses past :data:`MAX_PIPELINED` of them). A parse error or a body too
    large queues a 400/413 behind what came before, then the connection closes.
    """

    def __init__(self, app, live):
        self.app, self.live = app, live
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.pending = collections.deque()
        self.task = None  # the request being answered asynchronously
        self.closing = False  # an answer with Connection: close was sent, or an error is queued
        self.too_large = False
        self._drained = None  # a future while the transport's write buffer is full
        self._reset()

    def _reset(self):
        self.url, self.body, self.accept, self.body_len = b"", [], b"", 0

    # -- asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.live.add(self)

    def connection_lost(self, exc):
        self.live.discard(self)
        self.closing = True
        self.pending.clear()
        if self.task is not None:
            self.task.cancel()  # a client gone mid-kickoff or mid-stream: stop working for it
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self):
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def data_received(self, data):
        if self.closing:
            return  # an error answer is queued, or the client asked to close: the rest is ignored
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(None)  # its request is answered (no upgrade happens); then the connection closes
        except httptools.HttpParserError as e:
            if self.too_large:
                self._fail(413, f"request body over {MAX_BODY_BYTES} bytes")
            else:
                self._fail(400, f"malformed request: {e}")

    # -- httptools callbacks
    def on_message_begin(self):
        self._reset()

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        name = name.lower()
        if name == b"accept":
            self.accept = value
        elif name == b"content-length" and value.strip().isdigit() and int(value) > MAX_BODY_BYTES:
            self.too_large = True  # refused before its body arrives
            raise _StopParsing

    def on_body(self, body):
        self.body_len += len(body)
        if self.body_len > MAX_BODY_BYTES:  # chunked bodies have no Content-Length to check first
            self.too_large = True
            raise _StopParsing
        self.body.append(body)

    def on_message_complete(self):
        if self.closing:
            return
        if self.url == b"/ping" and self.task is None and not self.pending and self.parser.get_method() == b"GET":
            # The throughput benchmark's request: no Request object, no routing, a pre-built answer.
            keep_alive = self.parser.should_keep_alive()
            self._send(PING if keep_alive else PING_CLOSE, keep_alive)
            return
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self._fail(400, f"malformed URL {self.url[:200]!r}")
            return
        req = Request(self.parser.get_method().decode(), url.path.decode("latin-1"),
                      (url.query or b"").decode("latin-1"), b"".join(self.body), self.accept.decode("latin-1"),
                      self.parser.should_keep_alive(), self.parser.get_http_version() == "1.1")
        if self.task is not None or self.pending:
            self.pending.append(req)
            if len(self.pending) >= MAX_PIPELINED:
                self.transport.pause_reading()
        else:
            self._answer(req)

    # -- answering
    def _fail(self, status, message=""):
        """Answer ``status`` (None: nothing) after the requests already queued, then close; read
        nothing more (the parser cannot go on after an error)."""
        self.transport.pause_reading()
        self.closing = True
        self.pending.append(b"" if status is None else encode(status, as_json({"error": message}), keep_alive=False))
        if self.task is None:
            self._next()

    def _answer(self, req):
        try:
            out = self.app.handle(req)
        except Exception:  # noqa: BLE001 - a handler's bug: log it, answer 500, keep serving the others
            log.exception("%s %s failed", req.method, req.path)
            out = reply(req, 500, {"error": "internal error"})
        if isinstance(out, bytes):
            self._send(out, req.keep_alive)
        else:
            self.task = asyncio.get_running_loop().create_task(self._answer_later(req, out))

    async def _answer_later(self, req, out):
        try:
            if isinstance(out, Stream):
                await self._stream(req, out)
            else:
                self._send(await out, req.keep_alive)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a handler's bug: log it, answer 500 (or cut a stream), keep serving
            log.exception("%s %s failed", req.method, req.path)
            if isinstance(out, Stream):
                self.transport.close()  # its head is sent: only closing tells the client it is cut
            else:
                self._send(reply(req, 500, {"error": "internal error"}), keep_alive=False)
        finally:
            self.task = None
        self._next()

    async def _stream(self, req, stream):
        chunked = req.http11
        self.transport.write(stream_head(chunked))
        if chunked:
            def send(data, write=self.transport.write):
                write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            send = self.transport.write
        await stream.produce(_Out(send, self.drain))
        if chunked:
            self._send(b"0\r\n\r\n", req.keep_alive)
        else:
            self._send(b"", False)

    def _next(self):
        """Answer queued requests until one must wait or the connection closes."""
        while self.pending and self.task is None and not self.transport.is_closing():
            item = self.pending.popleft()
            if isinstance(item, bytes):  # a queued 400/413, or b"": close
                self._send(item, False)
            else:
                self._answer(item)
        if not self.closing and len(self.pending) < MAX_PIPELINED:
            self.transport.resume_reading()

    def _send(self, data, keep_alive):
        self.transport.write(data)
        if not keep_alive:
            self.closing = True
            self.transport.close()  # after the buffered bytes are written

    async def drain(self):
        """Wait while the client reads slower than a stream writes."""
        if self._drained is not None:
            await self._drained


@dataclass(frozen=True)
class _Out:
    """What a :class:`Stream` producer writes to: ``send(bytes)`` one event, ``await drain()``."""

    send: Callable
    drain: Callable


# ------------------------------------------------------------------ the command


def parse_stall(text):
    """``--stall AT:FOR`` (durations, e.g. ``5s:1s``) → ``(at_s, for_s)``; :class:`UsageError`."""
    at, sep, length = str(text).partition(":")
    if not sep:
        raise UsageError(f"--stall: {text!r} is not AT:FOR (e.g. 5s:1s: at 5 s after start, stall 1 s)")
    return parse_duration(at.strip(), "--stall AT"), parse_duration(length.strip(), "--stall FOR")


def make_flow(flow_params, seed):
    """The served flow: ``--flow-param`` KEY=VALUE strings (or a dict), async LLM waits, ``--seed``
    unless a seed param says otherwise. :class:`UsageError` for a bad parameter."""
    from ..options import BY_KEY
    from ..workload.flow import build_flow

    params = BY_KEY["flow_params"].check(flow_params or {}, "--flow-param", False)
    if seed is not None:
        params.setdefault("seed", seed)
    params["async_io"] = True  # the server awaits the waits: thousands of kickoffs in flight
    return build_flow(params)


def new_loop():
    from ..engine.aslots import loop_kind

    if loop_kind() == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def url_of(sockname):
    host, port = sockname[0], sockname[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(host="127.0.0.1", port=0, flow_params=None, seed=None, stall_at=None):
    """``loadgen serve``: listen on ``host``:``port`` (0: a free port), print one line
    ``loadgen serve: listening on http://HOST:PORT`` on stdout, serve until SIGINT or SIGTERM.
    Arguments as typed on the command line. Returns the exit code (130 / 143 after a signal);
    :class:`UsageError` for a bad argument or an address it cannot listen on."""
    from ..engine._proc import set_title

    port = check_int(port, "--port", 0, 65535)
    seed = None if seed is None else check_int(seed, "--seed", 0)
    stall_plan = parse_stall(stall_at) if stall_at else None
    app = App(make_flow(flow_params, seed))
    set_title(TITLE)
    loop = new_loop()
    try:
        return loop.run_until_complete(_serve(app, host, port, stall_plan))
    finally:
        loop.close()


async def _serve(app, host, port, stall_plan):
    loop = asyncio.get_running_loop()
    live = set()
    try:
        server = await loop.create_server(lambda: Connection(app, live), host, port, reuse_address=True,
                                          backlog=LISTEN_BACKLOG)
    except OSError as e:  # port in use, an address not of this machine, a host that does not resolve
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sockname = server.sockets[0].getsockname()
    if not is_loopback(sockname[0]):
        print(f"loadgen serve: warning: listening on {sockname[0]}, not loopback: anyone who can reach this "
              "machine can run kickoffs and stall it", file=sys.stderr)
    stopped = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda s=signum: stopped.done() or stopped.set_result(s))
    if stall_plan:
        loop.call_later(stall_plan[0], stall_server, stall_plan[1])
    print(f"loadgen serve: listening on {url_of(sockname)}", flush=True)
    try:
        signum = await stopped
    finally:
        server.close()
        tasks = [conn.task for conn in live if conn.task is not None]
        for conn in list(live):
            conn.transport.close()
        for task in tasks:
            task.cancel()  # a kickoff or stream in flight: its clean-up runs before the loop closes
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        for signum_ in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum_)
    return ExitCode.of_signal(signum)
