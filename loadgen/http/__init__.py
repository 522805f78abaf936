"""HTTP operations without code (``--url``, ``[[scenario.ops]] url =``) and the embedded flow as a service.

* :mod:`.spec` — what an HTTP op is (:class:`~.spec.HttpSpec`: method, URL, headers, body as templates;
  expected statuses), parsed and checked in the master so bad input is exit 2 before any load;
* :mod:`.client` — the op in a worker: a keep-alive pool of connections on the worker's event loop
  (asyncio protocols over ``httptools``, llhttp's parser), timings per request and per stream;
* :mod:`.sse` — Server-Sent Events split into events as they arrive (time to first event, gaps);
* :mod:`.serve` — ``loadgen serve``: the embedded AI Writing Flow over HTTP on loopback.
"""
