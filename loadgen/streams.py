"""The run directory's streams and atomic files.

``timeseries.jsonl`` and ``events.jsonl`` are appended line by line and
flushed at once, so a killed run keeps every line it wrote. Whole files
(reports) are written to a temp file in the same folder and renamed over
the old one: a reader sees the old file or the new one, never half.

The rebuild journal is written here too: :func:`note_scenario` and
:func:`note_component` append a ``scenario`` event before each scenario
and a ``component`` event (its whole result) after it, so that
``loadgen report`` (``report/rebuild.py``) can rebuild a killed run.

Safety of what is written: a run directory belongs to one run
(:func:`prepare_run_dir` claims it atomically and refuses one that already holds a run's streams);
the streams (``events.jsonl``, ``timeseries.jsonl``, ``workers.log``) are
opened by :func:`open_stream` without following a symlink (``O_NOFOLLOW``),
only when they are regular files with no other hard link, and created
``0o644`` at most (less the umask): never writable by others. Reports
(:func:`atomic_write`) are written to a new temp file (``O_CREAT|O_EXCL|
O_NOFOLLOW``, by ``mkstemp``) renamed over the report's path: a symlink
planted there is replaced, never followed.

Safety of what is read: every file loadgen reads as input (a report, a
stream, a plan, an ``--inputs`` file) goes through :func:`read_bounded`:
regular files only (a FIFO, a device like ``/dev/zero``, a socket or a
directory is refused without being read: checked with ``stat`` before the
open and ``fstat`` after it, and the open is ``O_NONBLOCK`` so a FIFO cannot
block it), at most :data:`MAX_REPORT_BYTES` for a report or stream and
:data:`MAX_PLAN_BYTES` for a plan or inputs file. JSON goes through
:func:`parse_json` (or :func:`load_json`): nesting deeper than
:data:`MAX_JSON_DEPTH`, integers longer than :data:`MAX_INT_DIGITS` digits and
NaN/Infinity (in reports and streams, which loadgen never writes with them)
are a :class:`~loadgen.errors.UsageError` (exit 2) naming the file and line —
:class:`UnreadableFile` (also an ``OSError``) and :class:`BadJson` (also a
``ValueError``), so that code catching what ``open`` and ``json.loads`` raised
still catches them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import stat
import tempfile
import time

from .errors import OutputError, UsageError

TIMESERIES = "timeseries.jsonl"
EVENTS = "events.jsonl"
WORKERS_LOG = "workers.log"  # the workers' stdout/stderr (engine/worker.py:_redirect_output)
RUN_STREAMS = (EVENTS, TIMESERIES, WORKERS_LOG)  # a directory holding one of these holds a run

# What loadgen reads as input: regular files only, at most this many bytes.
MAX_REPORT_BYTES = 256 * 2**20  # a report.json, events.jsonl or timeseries.jsonl
MAX_PLAN_BYTES = 64 * 2**20  # a plan (TOML) or an --inputs file
MAX_JSON_DEPTH = 64  # nesting of a report's or a stream record's JSON (loadgen's own reach about 6)
MAX_INT_DIGITS = 32  # digits of an integer in a report or stream (a count or a ns time has ≤ 20)
STREAM_MODE = 0o644  # the streams and workers.log: at most rw-r--r-- (less the umask)
REPORT_MODE = 0o644  # report files, by default: at most rw-r--r-- (less the umask)
_CHUNK = 8 * 2**20
SCENARIO_EVENT = "scenario"  # the rebuild journal's event types (report/rebuild.py reads them)
COMPONENT_EVENT = "component"

_journal_log = logging.getLogger("loadgen.rebuild")  # the logger the journal has always used


def atomic_write(path, text, mode=None):
    """Write ``text`` to ``path`` atomically (temp file + fsync + rename in the same folder).

    ``mode``: the file's permissions (default: :data:`REPORT_MODE`, 0644, less the umask). The temp
    file is new (``mkstemp``: ``O_CREAT|O_EXCL|O_NOFOLLOW``, a random name), and the rename
    replaces whatever is at ``path`` — a symlink planted there is replaced, never followed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:  # a lone surrogate: "?", not a crash
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode if mode is not None else REPORT_MODE & ~_umask())  # mkstemp makes 0600
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


class RunDirTaken(OutputError):
    """The run directory already holds a run, or another command claimed it first (exit 2)."""


def prepare_run_dir(path):
    """Create ``path`` (0755 less the umask), prove it is writable and claim it for this command;
    :class:`OutputError` (exit 2) otherwise.

    One run per directory: a directory that already holds a run's streams
    (``events.jsonl``, ``timeseries.jsonl`` or ``workers.log``, even as a
    symlink) is refused with one line naming it — a second run never
    appends to the first one's streams. Give a new ``--out`` (or none: a
    new ``loadgen-results/<UTC time>-<name>/``), or remove the old run's
    files. Other files (a ``nightly.log``, old reports) do not count; an
    existing empty directory (``--out /tmp``) is taken.

    The claim is atomic, not check-then-create: ``events.jsonl`` is created
    here with ``O_CREAT|O_EXCL`` (empty; the run's events append to it), so of
    two commands started at once with the same ``--out`` exactly one gets the
    directory and the other is refused (:class:`RunDirTaken`) before any load.
    The claim is the run's own stream: it stays, and says the directory holds
    a run.

    Called once per command, when it opens its run directory
    (``api.Session.open``; the fleet's master for its directory and each
    shard for ``shards/<n>``): the scenarios and phases of a suite or a plan
    then share the directory, and the rebuild journal appends to its
    ``events.jsonl``. ``loadgen report RUN_DIR`` does not call it: it
    replaces the reports of an existing run (atomically) and appends nothing.
    """
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        held = [n for n in RUN_STREAMS if os.path.lexists(os.path.join(path, n))]
        if held:
            raise _taken(path, ", ".join(held))
        fd, probe = tempfile.mkstemp(prefix=".loadgen-write-test.", dir=path)  # O_EXCL: no planted file followed
        try:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        try:
            os.close(os.open(os.path.join(path, EVENTS), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, STREAM_MODE))
        except FileExistsError:  # another command claimed it between the check above and here
            raise _taken(path, f"{EVENTS}, just claimed by another run") from None
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"--out {path!r}: cannot write there: {e.strerror or e}") from None
    return path


def _taken(path, held):
    return RunDirTaken(f"--out {path!r} already holds a run ({held}): loadgen never writes a run into another "
                       "run's directory; give a new --out (or none, for loadgen-results/<UTC time>-<name>/), or "
                       "remove that run's files first")


NEW_RUN_DIR_TRIES = 100  # default run directories tried per command: <stamp>-<name>, then -2, -3, …


def new_run_dir(name, root="loadgen-results"):
    """Claim a new default run directory (:func:`default_run_dir`; :func:`prepare_run_dir`): two
    commands started within the same second without ``--out`` get ``…-<name>`` and ``…-<name>-2``."""
    base = default_run_dir(name, root)
    for n in range(1, NEW_RUN_DIR_TRIES + 1):
        try:
            return prepare_run_dir(base if n == 1 else f"{base}-{n}")
        except RunDirTaken:
            continue
    raise OutputError(f"{root}: {NEW_RUN_DIR_TRIES} run directories named {os.path.basename(base)}… are taken; "
                      "give --out")


def open_stream(path, mode=STREAM_MODE):
    """A file descriptor of ``path`` opened for appending: a stream of the run directory.

    Created with ``mode`` at most (less the umask) when missing. Never follows a
    symlink (``O_NOFOLLOW``: ``ELOOP``), never blocks on a FIFO (``O_NONBLOCK``),
    and refuses (``OSError``) anything but a regular file with one link — so
    a symlink, FIFO, device or hard link planted in a run directory is never
    written through. ``os.devnull`` is opened as it is.
    """
    if path == os.devnull:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 mode & STREAM_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: {_file_kind(st.st_mode)}, not a regular file: not written")
        if st.st_nlink != 1:
            raise OSError(f"{path}: has {st.st_nlink} hard links: not written")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


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
        self._f = os.fdopen(open_stream(path), "a", encoding="utf-8")  # no symlink followed, 0644 at most

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


def read_jsonl(path, limit=MAX_REPORT_BYTES, what="stream", numbered=False):
    """Records of a JSON-lines file (read with :func:`read_bounded`); a torn last line (killed writer) is
    skipped. :class:`UsageError` naming the file and line for anything else that is not JSON.
    ``numbered``: ``(line number, record)`` pairs instead."""
    data = read_bounded(path, limit, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BadJson(f"{path}: line {line}: not UTF-8 text ({e.reason})") from None
    del data
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = parse_json(line, f"{path}: line {i + 1}")
            out.append((i + 1, record) if numbered else record)
        except NotJson:
            if i >= len(lines) - 2:  # only the last line may be torn
                continue
            raise
    return out


# ---------------------------------------------------------------------- bounded, checked reads


class UnreadableFile(UsageError, OSError):
    """An input file refused or unreadable (:func:`read_bounded`): a usage error (exit 2, one line) that
    is also an ``OSError``, as reading the file used to raise."""


class BadJson(UsageError, ValueError):
    """Input that is not usable JSON (:func:`parse_json`): a usage error (exit 2, one line) that is also
    a ``ValueError``, as ``json.loads`` used to raise."""


class NotJson(BadJson):
    """Text that does not parse as JSON at all (a torn line is one)."""


def read_bounded(path, limit, what="file"):
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; :class:`UsageError` (exit 2, one
    line naming the file and the ``what``) otherwise.

    A FIFO, a character or block device, a socket or a directory is refused
    without a byte read: ``stat`` before the open, and ``fstat`` of the opened
    descriptor (opened ``O_NONBLOCK``, so that a FIFO swapped in cannot block
    the open). A file larger than ``limit``, or that grows past it while read,
    is refused as well.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(_not_regular(path, st.st_mode, what))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except UnreadableFile:
        raise
    except OSError as e:
        raise UnreadableFile(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableFile(_not_regular(path, st.st_mode, what))
        if st.st_size > limit:
            raise UnreadableFile(_too_large(path, st.st_size, limit, what))
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise UnreadableFile(_too_large(path, total, limit, what))
            chunks.append(chunk)
        return b"".join(chunks)
    except UnreadableFile:
        raise
    except OSError as e:
        raise UnreadableFile(f"{path}: cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def load_json(path, limit=MAX_REPORT_BYTES, what="report"):
    """The JSON document in ``path``: :func:`read_bounded` then :func:`parse_json`; :class:`UsageError`
    (one line naming the file and, when known, the line) for anything unusable, an empty file included."""
    data = read_bounded(path, limit, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJson(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); not a {what}") from None
    if not text.strip():
        raise BadJson(f"{path}: empty file, not a {what}")
    return parse_json(text, str(path), document=True)


def parse_json(text, where, strict=True, document=False):
    """``json.loads(text)`` for input loadgen did not write itself; ``where`` names it in errors
    (``"FILE"`` or ``"FILE: line N"``).

    :class:`UsageError` (exit 2, one line) for text that is not JSON, nesting
    too deep for the parser (``RecursionError``), and an integer beyond
    Python's digit limit. ``strict`` (reports and streams, written by loadgen
    with finite numbers only) also refuses NaN and ±Infinity (literals, or a
    float that overflows like ``1e999``), integers longer than
    :data:`MAX_INT_DIGITS` digits and nesting deeper than :data:`MAX_JSON_DEPTH`.
    ``document``: ``text`` is a whole file (its errors say "truncated?").
    """
    what = "not valid JSON (truncated?)" if document else "not valid JSON"
    try:
        if not strict:
            return json.loads(text)
        # Every number checked as it is parsed: twice json.loads' own time, where a regex looking for long
        # numbers first took ten times it (a history's rebuild reads hundreds of reports).
        value = json.loads(text, parse_constant=_no_constant, parse_int=_small_int, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        at = f" at line {e.lineno}" if document else ""
        raise NotJson(f"{where}: {what}: {e.msg}{at}") from None
    except RecursionError:
        raise BadJson(f"{where}: not usable JSON: nested too deeply") from None
    except ValueError as e:  # the int digit limit (Python ≥ 3.11), or ours
        raise BadJson(f"{where}: not usable JSON: {_first_line(e)}") from None
    if strict and text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth_over(value, MAX_JSON_DEPTH):
        raise BadJson(f"{where}: not usable JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a number loadgen writes")


def _small_int(text):
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {digits} digits (more than {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text):
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is out of range")
    return v


def _depth_over(value, limit):
    """True if ``value`` nests containers deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if d > limit:
            return True
        stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return False


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _not_regular(path, st_mode, what):
    if stat.S_ISDIR(st_mode):
        return f"{path}: is a directory, not a {what}"
    return f"{path}: is {_file_kind(st_mode)}, not a regular file; a {what} must be one (not read)"


def _file_kind(st_mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symlink")):
        if test(st_mode):
            return name
    return "not a regular file"


def _too_large(path, size, limit, what):
    return f"{path}: {_size(size)} or more, larger than the {_size(limit)} a {what} may have (not read)"


def _size(n):
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


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
