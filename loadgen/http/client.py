"""The HTTP op in a worker: a keep-alive pool on the worker's event loop, one connection per request in flight.

Each worker builds one :class:`Pool` per origin (scheme, host, port) and one :class:`HttpOp` per op;
the async slots (``engine.aslots``) await ``op(record)`` as they await any ``async def`` target, so
every load model, mix, stage and fleet runs HTTP ops unchanged. The path of one request is kept
lean, because it *is* the generator's ceiling: an idle connection popped from a list (a new one
only when every pooled one is busy), the request's bytes built once when its templates use no
record field, one ``transport.write``, ``httptools`` (llhttp) parsing the response in callbacks
that store a few ints, a future set when the message is complete. No per-request allocation but
the future and the timing tuples.

Per request: ``ttfb`` (request written → first response byte) and ``transfer`` (first byte → the
end) as named measurements; per new connection ``connect`` and ``tls``; for a streamed response
(``text/event-stream``: each event; a chunked body: each chunk) ``ttft`` (request written → first
event), ``inter_event`` (each gap) and ``stream`` (the whole response). Counts —
``http_bytes_sent``, ``http_bytes_received``, ``http_connections_opened``,
``http_connections_reused``, ``http_events`` — reach the report as figures and per-second rates.

Failures: a status outside the op's expected ones is ``HTTP 404 GET /drafts/{id}``; a refused,
reset or timed-out connection, a TLS error, a malformed response fail with their class. A
reused connection the server closed before answering is retried once on a new one when the
method is idempotent (as browsers do); ``--op-timeout`` cancels the request and drops its
connection (its state is unknown).
"""

from __future__ import annotations

import asyncio
import resource
import time

import httptools

from .. import named
from .spec import MAX_KEPT_BODY, fill, json_value, url_value
from .sse import EventSplitter

_clock = time.perf_counter_ns
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
USER_AGENT = "loadgen"
MAX_KEPT_HEADERS = 100  # headers of a response kept for checks


class HttpFailure(Exception):
    """A response the op does not accept; ``error_key`` (``HTTP 404 GET /drafts/{id}``) is how reports
    count it, so one endpoint's 404s are one line."""

    def __init__(self, key):
        super().__init__(key)
        self.error_key = key


class ProtocolFailure(Exception):
    """The server's bytes are not HTTP/1.x (llhttp's verdict)."""


class Stats:
    """A worker's HTTP counts since the last drain (plain ints on the loop's thread)."""

    __slots__ = ("sent", "received", "opened", "reused", "events")

    def __init__(self):
        self.sent = self.received = self.opened = self.reused = self.events = 0

    def take(self):
        out = {"http_bytes_sent": self.sent, "http_bytes_received": self.received,
               "http_connections_opened": self.opened, "http_connections_reused": self.reused,
               "http_events": self.events}
        self.sent = self.received = self.opened = self.reused = self.events = 0
        return {k: v for k, v in out.items() if v}


STATS = Stats()


class Times:
    """A worker's per-request timings (µs) since the last drain, in plain lists: an int appended per
    request rather than a tuple through :func:`loadgen.named.record`."""

    NAMES = ("ttfb", "transfer", "ttft", "inter_event", "stream")

    def __init__(self):
        self.ttfb, self.transfer, self.ttft, self.inter_event, self.stream = [], [], [], [], []

    def take(self):
        out = {}
        for name in self.NAMES:
            values = getattr(self, name)
            n = len(values)
            if n:
                out[name] = values[:n]
                del values[:n]
        return out


TIMES = Times()


class _Conn(asyncio.Protocol):
    """One connection: writes a request, parses its response (httptools callbacks), sets the waiter.

    The lean kind: httptools calls only the callbacks a protocol defines, so this one defines none
    for headers or body bytes (a header callback alone costs ~3 µs a response, an eighth of the
    budget at 40,000 requests a second). A chunked body's chunks still count as its events."""

    __slots__ = ("transport", "parser", "waiter", "closed", "status", "keep_alive", "first_ns", "done_ns",
                 "splitter", "chunks_ns", "head_only", "body", "pool", "loop")

    def __init__(self, pool):
        self.pool = pool
        self.loop = pool.loop
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter = None
        self.closed = False
        self.status = 0
        self.keep_alive = True
        self.first_ns = self.done_ns = 0
        self.splitter = None
        self.chunks_ns = None
        self.head_only = False
        self.body = None

    # -- asyncio
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not self.first_ns:
            self.first_ns = _clock()
        STATS.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(ProtocolFailure(f"malformed response: {e}"))
            self.transport.abort()

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        self.closed = True
        w = self.waiter
        self.waiter = None
        if w is None or w.done():
            return
        if exc is None and self.status and not self.done_ns and not self.parser.should_keep_alive():
            self.done_ns = _clock()  # a body delimited by the close (no length, not chunked): it ended now
            w.set_result(None)
        else:
            w.set_exception(exc if isinstance(exc, Exception) else
                            ConnectionResetError("the server closed the connection before the response ended"))

    # -- httptools
    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        if self.head_only:  # a HEAD response has no body whatever its Content-Length says
            self.keep_alive = self.parser.should_keep_alive()
            self.parser = httptools.HttpResponseParser(self)
            self._complete()

    def on_chunk_complete(self):
        if self.splitter is None:
            if self.chunks_ns is None:
                self.chunks_ns = []
            self.chunks_ns.append(_clock())

    def on_message_complete(self):
        if self.head_only:
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.done_ns = _clock()
        w = self.waiter
        self.waiter = None
        if w is not None:
            w.set_result(None)

    def _complete(self):
        self.done_ns = _clock()
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc):
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            w.set_exception(exc)

    # -- the op's side
    def send(self, request, head_only):
        """Write ``request``; returns the future set when its response has ended."""
        self.status = self.first_ns = self.done_ns = 0
        if self.chunks_ns is not None:
            self.chunks_ns = None
        self.head_only = head_only
        self.waiter = w = self.loop.create_future()
        self.transport.write(request)
        STATS.sent += len(request)
        return w

    def abort(self):
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _StreamConn(_Conn):
    """A connection whose responses may stream Server-Sent Events (the request accepts
    ``text/event-stream``): headers are read for the content type, the body split into events."""

    __slots__ = ("is_sse",)

    def __init__(self, pool):
        super().__init__(pool)
        self.is_sse = False

    def on_header(self, name, value):
        if len(name) == 12 and name.lower() == b"content-type":
            self.is_sse = value[:17].lower() == b"text/event-stream"

    def on_headers_complete(self):
        self.splitter = EventSplitter() if self.is_sse else None
        self.is_sse = False
        super().on_headers_complete()

    def on_body(self, body):
        if self.splitter is not None:
            self.splitter.feed(body, _clock())


class _ReadingConn(_StreamConn):
    """A connection whose responses' headers and body (up to :data:`MAX_KEPT_BODY`) are kept for the
    op's checks."""

    __slots__ = ("headers", "kept")

    def __init__(self, pool):
        super().__init__(pool)
        self.headers, self.kept = {}, bytearray()

    def send(self, request, head_only):
        self.headers, self.kept = {}, bytearray()
        return super().send(request, head_only)

    def on_header(self, name, value):
        super().on_header(name, value)
        if len(self.headers) < MAX_KEPT_HEADERS:
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body):
        super().on_body(body)
        if len(self.kept) < MAX_KEPT_BODY:
            self.kept += body[:MAX_KEPT_BODY - len(self.kept)]


class Pool:
    """The idle keep-alive connections of one origin in this worker (a stack: the warmest first)."""

    def __init__(self, scheme, host, port, insecure, streams, reads):
        self.scheme, self.host, self.port, self.insecure = scheme, host, port, insecure
        self.protocol = _ReadingConn if reads else _StreamConn if streams else _Conn
        self.idle = []
        self.loop = None
        self._ssl = None

    def take(self):
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                STATS.reused += 1
                return conn
        return None

    def give(self, conn):
        if conn.keep_alive and not conn.closed:
            self.idle.append(conn)
        else:
            conn.abort()

    async def open(self):
        """A new connection; ``connect`` and ``tls`` measured."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        t0 = _clock()
        transport, conn = await loop.create_connection(lambda: self.protocol(self), self.host, self.port)
        t1 = _clock()
        named.record("connect", (t1 - t0) // 1000)
        if self.scheme == "https":
            try:
                tls = await loop.start_tls(transport, conn, self._context(), server_hostname=self.host)
            except BaseException:
                transport.abort()
                raise
            conn.transport = tls
            named.record("tls", (_clock() - t1) // 1000)
        STATS.opened += 1
        return conn

    def _context(self):
        if self._ssl is None:
            import ssl

            ctx = ssl.create_default_context()
            if self.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        return self._ssl


_pools = {}


def pool_of(spec):
    """This worker's pool of ``spec``'s origin (one per scheme, host, port, TLS verification, whether its
    requests accept event streams and whether its checks read responses)."""
    key = (spec.scheme, spec.host, spec.port, spec.insecure, spec.accepts_events, spec.reads_response)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = Pool(*key)
        if len(_pools) == 1:
            _raise_fd_limit()
            named.add_counter_source(STATS.take)
            named.add_timing_source(TIMES.take)
    return pool


def _raise_fd_limit():
    """Thousands of connections need thousands of descriptors: the soft limit raised to the hard one, as
    servers do (the usual soft 1024 would end a 2,000-connection run with EMFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


class HttpOp:
    """``await op(record)``: one request of :class:`~loadgen.http.spec.HttpSpec` ``spec``; returns the
    status (success) or raises (failure, see the module)."""

    is_async = True

    def __init__(self, spec):
        self.spec = spec
        self.pool = pool_of(spec)
        self.head_only = spec.method == "HEAD"
        self.retry = spec.method in IDEMPOTENT
        self.fields = spec.fields
        self.checks = spec.checks
        self.request = None if self.fields else self.render(None)
        self._ttfb, self._transfer = TIMES.ttfb.append, TIMES.transfer.append

    def render(self, record):
        """The request's bytes, its templates filled from ``record``."""
        spec = self.spec
        if record is None:
            target, headers, body = spec.target, spec.headers, spec.body
        else:
            target = fill(spec.target, record, url_value)
            headers = tuple((k, fill(v, record)) for k, v in spec.headers)
            body = None if spec.body is None else fill(spec.body, record, json_value if spec.json_body else None)
        lines = [f"{spec.method} {target} HTTP/1.1", f"Host: {spec.authority}"]
        given = {k.lower() for k, _ in headers}
        if "user-agent" not in given:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept" not in given:
            lines.append("Accept: */*")
        lines.extend(f"{k}: {v}" for k, v in headers)
        payload = b"" if body is None else body.encode()
        if body is not None or spec.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict") + payload

    async def __call__(self, record=None):
        request = self.request if self.request is not None else self.render(record)
        pool = self.pool
        conn = pool.take()
        reused = conn is not None
        if conn is None:
            conn = await pool.open()
        t0 = _clock()
        try:
            await conn.send(request, self.head_only)
        except (ConnectionError, OSError):
            conn.abort()
            if not (reused and self.retry and not conn.first_ns):
                raise
            # The server closed an idle connection as we wrote to it: once more, on a new one.
            conn = await pool.open()
            t0 = _clock()
            try:
                await conn.send(request, self.head_only)
            except BaseException:
                conn.abort()
                raise
        except BaseException:  # cancelled (--op-timeout) or a malformed response: its state is unknown
            conn.abort()
            raise
        first = conn.first_ns
        self._ttfb((first - t0) // 1000)
        self._transfer((conn.done_ns - first) // 1000)
        if conn.chunks_ns is not None or conn.splitter is not None:
            _stream(conn, t0)
        if self.checks:
            for c in self.checks:
                named.check(c.passed(conn.status, conn.headers, bytes(conn.kept)), c.text)
        pool.give(conn)
        if not self.spec.succeeded(conn.status):
            raise HttpFailure(f"HTTP {conn.status} {self.spec.name}")
        return conn.status


def _stream(conn, t0):
    """A streamed response's measurements: ``ttft``, each ``inter_event`` gap, ``stream``."""
    times = conn.splitter.times_ns if conn.splitter is not None else conn.chunks_ns
    if not times:
        return
    TIMES.ttft.append((times[0] - t0) // 1000)
    gap = TIMES.inter_event.append
    prev = times[0]
    for t in times[1:]:
        gap((t - prev) // 1000)
        prev = t
    TIMES.stream.append((conn.done_ns - t0) // 1000)
    STATS.events += len(times)
