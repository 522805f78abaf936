"""What the fleet master knows of one shard (:class:`ShardState`): its worker, its task, its
start, what it streamed and what it returned. Kept by ``master.py``, read by ``summary.py``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ShardState:
    """What the master knows of one shard: its worker, its task, what it streamed and returned."""

    index: int
    worker: str
    host: str
    offset_s: float = 0.0  # this worker's clock minus the master's
    future: object = None
    status: str = "pending"  # pending → running → finished | lost | error | refused | stopped
    reason: str | None = None
    result: dict | None = None
    seconds: list = field(default_factory=list)  # streamed per-second records
    delays: list = field(default_factory=list)  # (second end → arrival at the master) per loaded second, s
    hops: list = field(default_factory=list)  # (sent by the shard → arrival), s
    last_heard: float = 0.0  # time.monotonic() of the last message
    ready_at: float | None = None  # the master's clock when the shard's "ready" arrived
    load_started_at: float | None = None  # on the master's clock
    breach_events: int = 0
    missing: int = 0  # consecutive membership checks that did not list the worker
    shares: list = field(default_factory=list)  # {phase, model, mine, total, fraction} per phase begun
    warnings: list = field(default_factory=list)
    usage_error: bool = False

    @property
    def done(self):
        """True once the shard finished, was lost, or ended any other way."""
        return self.status not in ("pending", "running")

    @property
    def label(self):
        """``shard N@HOST``: the shard's name in merged messages."""
        return f"shard {self.index}@{self.host}"

    def on_second(self, msg, arrived, merger):
        """Keep a streamed per-second record (``msg``, arrived at ``arrived``, master's clock)."""
        rec = msg.get("rec") or {}
        if not isinstance(rec.get("t"), (int, float)):
            return
        if merger.add(self.index, rec, arrived - (rec["t"] + 1)):
            self.seconds.append(dict(rec, scenario=msg.get("scenario")))
            if rec.get("ops") or rec.get("throughput") or rec.get("in_flight"):
                # Seconds under load only: a held pool's idle seconds are written by the Runner
                # after its grace (no worker reports them), which says nothing of the stream.
                self.delays.append(arrived - (rec["t"] + 1))
            self.hops.append(arrived - (msg.get("sent", arrived) - self.offset_s))
        if msg.get("load_started_at") and self.load_started_at is None:
            self.load_started_at = msg["load_started_at"] - self.offset_s
        if isinstance(msg.get("share"), dict):
            self.shares.append(msg["share"])

    def on_result(self, res):
        """Keep the shard's returned result dict (see ``shard.run_shard``)."""
        self.result = res
        self.status = res.get("status", "finished")
        self.reason = res.get("reason")
        self.warnings = list(res.get("warnings") or self.warnings)
        if res.get("load_started_at") and self.load_started_at is None:
            self.load_started_at = res["load_started_at"] - self.offset_s
