"""The run directory's streams and atomic files.

``timeseries.jsonl`` and ``events.jsonl`` are appended line by line and
flushed at once, so a killed run keeps every line it wrote. Whole files
(reports) are written to a temp file in the same folder and renamed over
the old one: a reader sees the old file or the new one, never half.

The rebuild journal is written here too: :func:`note_scenario` and
:func:`note_component` append a ``scenario`` event before each scenario
and a ``component`` event (its whole result) after it, so that
``loadgen report`` (``report/rebuild.py``) can rebuild a killed run.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import time

from .errors import OutputError

TIMESERIES = "timeseries.jsonl"
EVENTS = "events.jsonl"
SCENARIO_EVENT = "scenario"  # the rebuild journal's event types (report/rebuild.py reads them)
COMPONENT_EVENT = "component"

_journal_log = logging.getLogger("loadgen.rebuild")  # the logger the journal has always used


def atomic_write(path, text, mode=None):
    """Write ``text`` to ``path`` atomically (temp file + fsync + rename in the same folder).

    ``mode``: the file's permissions (default: 0666 less the umask, as ``open`` would).
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode if mode is not None else 0o666 & ~_umask())  # mkstemp makes 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj):
    """``obj`` with every non-finite float (inf, nan) replaced by None: JSON has no such numbers."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def default_run_dir(name, root="loadgen-results"):
    """``ROOT/<UTC stamp>-<name>`` (not created): a new run's default directory."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return os.path.join(root, f"{stamp}-{name}")


def prepare_run_dir(path):
    """Create ``path`` and prove it is writable; :class:`OutputError` otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".loadgen-write-test")
        with open(probe, "w") as f:
            f.write("x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"--out {path!r}: cannot write there: {e.strerror or e}") from None
    return path


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), default=_json_default, allow_nan=False)


def _json_default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "item"):  # numpy scalar
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class JsonLines:
    """An append-only JSON-lines file, flushed after every line.

    After a disk error the stream is marked failed (``error`` set) and further
    writes are dropped, so the run can stop cleanly with the reason.
    """

    def __init__(self, path):
        self.path = path
        self.error = None
        self._f = open(path, "a", encoding="utf-8")

    def write(self, record):
        """Append ``record`` (JSON-serialisable) as one line and flush; dropped once the stream failed."""
        if self._f is None:
            return
        try:
            self._f.write(_dumps(record) + "\n")
            self._f.flush()
        except OSError as e:
            self.error = e
            self._close_quietly()

    def close(self):
        """Close the file; a close error is kept in ``error`` (the first error wins), never raised."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError as e:
                self.error = self.error or e
            self._f = None

    def _close_quietly(self):
        try:
            self._f.close()
        except OSError:
            pass
        self._f = None


class EventLog(JsonLines):
    """``events.jsonl``: every line has ``t`` (UNIX seconds) and ``type``."""

    def __init__(self, path, phase=None):
        super().__init__(path)
        self.phase = phase
        self.recent = []  # events of this run, kept for the report (bounded)

    def emit(self, type_, **fields):
        """Append an event ``{t, type, **fields}`` (``t`` defaults to now; ``phase`` added if set); returns it."""
        record = {"t": round(fields.pop("t", time.time()), 6), "type": type_, **fields}
        if self.phase is not None:
            record.setdefault("phase", self.phase)
        self.write(record)
        if len(self.recent) < 10_000:
            self.recent.append(record)
        return record


def read_jsonl(path):
    """Records of a JSON-lines file; a torn last line (killed writer) is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # only the last line may be torn
                continue
            raise
    return out


dumps = _dumps


# ---------------------------------------------------------------------- the rebuild journal


def note_scenario(session, scenario, kind):
    """Append a ``scenario`` event (name, kind, profile, criteria, key_metric) to ``session.run_dir``'s events.

    Called before a scenario runs. Nothing without a run directory; a write
    error is logged (logger ``loadgen.rebuild``), never raised.
    """
    if not getattr(session, "run_dir", None):
        return
    try:
        criteria = [str(c) for c in scenario.criteria_for(session)]
    except Exception:  # noqa: BLE001 - the scenario reports bad criteria itself
        criteria = []
    _append(session.run_dir, SCENARIO_EVENT, name=scenario.name, kind=kind, profile=session.profile,
            criteria=criteria, key_metric=getattr(scenario, "key_metric", "success_rate"))


def note_component(session, result):
    """Append a ``component`` event with the scenario's whole result (less tracebacks, inf/NaN as None).

    Called after a scenario ran; ``result``: its ``StressTestResult``. Nothing
    without a run directory; a write error is logged, never raised.
    """
    if not getattr(session, "run_dir", None):
        return
    d = result.to_dict()
    d.pop("tracebacks", None)
    _append(session.run_dir, COMPONENT_EVENT, name=result.test_name, result=json_safe(d))


def _append(run_dir, type_, **fields_):
    stream = None
    try:
        stream = EventLog(os.path.join(run_dir, EVENTS))
        stream.emit(type_, **fields_)
    except (OSError, TypeError, ValueError) as e:  # a lost note must never fail the run
        _journal_log.warning("could not append a %s event to %s: %s", type_, EVENTS, e)
    finally:
        if stream is not None:
            stream.close()
