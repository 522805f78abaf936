"""An async, I/O-bound flow against a loopback service that the example starts itself.

The factory :func:`make_client` runs once per worker: it starts a small
asyncio TCP service on ``127.0.0.1`` (an ephemeral port, in a background
thread of that worker) and returns the operation, an ``async def`` that
sends one JSON line and awaits the reply. The service answers after a
lognormal "backend" delay and refuses a share of requests (``error_rate``)
with an error reply, which the client raises as ``ServiceUnavailable`` — a
failure, classified by type in the report.

The operation runs on the worker's async slots: every call of a worker shares
its one event loop, so the client keeps a pool of connections — one per call
in flight, opened when none is idle and reused after: a keep-alive client, not
a connection per request. Only the loopback interface is used.
::

    python -m loadgen run --config examples/async_service.toml
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import threading

HOST = "127.0.0.1"  # loopback only
START_TIMEOUT_S = 5.0
MAX_LINE = 64 * 1024


class ServiceUnavailable(Exception):
    """The service refused the request (an error reply)."""


class ProtocolError(Exception):
    """The reply did not belong to the request, or the connection closed."""


class LoopbackService:
    """An asyncio line-protocol service in a daemon thread; ``port`` once started."""

    def __init__(self, latency_ms=20.0, sigma=0.5, error_rate=0.0, seed=None):
        self.latency_ms = float(latency_ms)
        self.sigma = float(sigma)
        self.error_rate = float(error_rate)
        self.rng = random.Random(seed)
        self.port = None
        self.served = 0
        self._ready = threading.Event()
        self._error = None

    def start(self):
        threading.Thread(target=self._main, name="loopback-service", daemon=True).start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"loopback service did not start within {START_TIMEOUT_S}s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self):
        loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(asyncio.start_server(self._serve, HOST, 0, limit=MAX_LINE))
            self.port = server.sockets[0].getsockname()[1]
        except OSError as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()

    def _delay_s(self):
        # lognormal around latency_ms (its median), like a backend's long tail
        return self.latency_ms * math.exp(self.rng.gauss(0.0, self.sigma)) / 1000.0

    async def _serve(self, reader, writer):
        try:
            while line := await reader.readline():
                request = json.loads(line)
                await asyncio.sleep(self._delay_s())
                self.served += 1
                if self.rng.random() < self.error_rate:
                    reply = {"id": request["id"], "error": "503 overloaded"}
                else:
                    text = str(request.get("text", ""))
                    reply = {"id": request["id"], "words": len(text.split()), "upper": text.upper()}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class Client:
    """Keep-alive client: a pool of connections, one per call in flight, each reused when its call ends
    with a reply (a connection that failed is closed, never reused)."""

    def __init__(self, port):
        self.port = port
        self._idle = []  # open connections no call is using
        self._ids = itertools.count(1)

    async def call(self, record=None):
        conn = self._idle.pop() if self._idle else await asyncio.open_connection(HOST, self.port, limit=MAX_LINE)
        reader, writer = conn
        rid = next(self._ids)
        text = (record or {}).get("text", "the quick brown fox")
        reusable = False
        try:
            writer.write(json.dumps({"id": rid, "text": text}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ProtocolError("the service closed the connection")
            reply = json.loads(line)
            if reply.get("id") != rid:
                raise ProtocolError(f"reply {reply.get('id')} to request {rid}")
            reusable = True
        finally:
            if reusable:
                self._idle.append(conn)
            else:
                writer.close()
        if "error" in reply:
            raise ServiceUnavailable(reply["error"])
        return reply


def make_client(latency_ms=20.0, sigma=0.5, error_rate=0.0, seed=None):
    """The factory (once per worker): start this worker's service, return the async operation."""
    service = LoopbackService(latency_ms, sigma, error_rate, seed).start()
    return Client(service.port).call
