"""A small shop's operations, for mixes, named measurements and checks (examples/shop.toml).

``login`` and ``browse`` wait like calls to a backend; ``checkout`` times its payment call under a
name (``loadgen.measure``) and checks the receipt without failing the operation (``loadgen.check``)::

    python -m loadgen run --target examples/shop.py:login@1 --target examples/shop.py:browse@9 \\
        --concurrency 20 --duration 30s --criterion "p95_ms{op=browse} < 200"
"""

import random
import time

import loadgen

_rng = random.Random()


def login(inputs=None, backend_ms=8.0):
    time.sleep(_rng.lognormvariate(0, 0.3) * backend_ms / 1000)


def browse(inputs=None, backend_ms=3.0, missing=0.01):
    time.sleep(_rng.lognormvariate(0, 0.5) * backend_ms / 1000)
    if _rng.random() < missing:
        raise LookupError("page not found")


def checkout(inputs=None, payment_ms=25.0, late_receipts=0.02):
    with loadgen.measure("cart"):
        time.sleep(0.002)
    with loadgen.measure("payment"):
        time.sleep(_rng.lognormvariate(0, 0.4) * payment_ms / 1000)
    receipt = {"id": _rng.randrange(10**9)} if _rng.random() >= late_receipts else {}
    loadgen.check("id" in receipt, "has_receipt")
    return receipt
