"""The history's store: one SQLite file (``ROOT/history.sqlite``) of every night's key figures.

The run directories under the nightly root are the source of truth; the
store is an index of them that :func:`open_store` brings up to date on every
call (new or rewritten reports are read, nothing else is) and rebuilds from
scratch with ``rebuild=True`` (``loadgen history --rebuild``), when it is
corrupt (with a warning), or when it is missing.

A night whose directory was pruned keeps its row and figures (``present`` 0):
the history outlives ``LOADGEN_KEEP``. ``scripts/nightly.sh`` also keeps each
pruned night's ``report.json``, so ``--rebuild`` loses nothing.

Tables (:data:`SCHEMA_VERSION`)::

    meta(key, value)              schema_version, written_by (loadgen version)
    runs(id, dir, report, report_mtime, ended_at, series, series_fields, label,
         exit_code, failed, failed_components, rebuilt, present)
    figures(run_id, component, metric, value, low, high)

A store whose ``schema_version`` is newer than this loadgen's is refused
(:class:`~loadgen.errors.UsageError`, exit 2): it was written by a newer
loadgen, and rewriting it would lose what that one keeps.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field

from .. import __version__
from ..errors import UsageError
from . import series as S

SCHEMA_VERSION = 1
STORE_FILE = "history.sqlite"
# A directory whose streams changed this recently and that has no report yet is a night still running
# (a `loadgen history` by hand while cron runs): skipped, never rebuilt half-way.
LIVE_STREAM_AGE_S = 120.0
SQLITE_TIMEOUT_S = 30.0  # waits for another writer (nightly.sh and a person at once) before failing

log = logging.getLogger("loadgen.history")

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY, dir TEXT UNIQUE NOT NULL, report TEXT, report_mtime REAL, ended_at REAL,
    series TEXT, series_fields TEXT, label TEXT, exit_code INTEGER, failed INTEGER NOT NULL,
    failed_components TEXT, rebuilt INTEGER NOT NULL DEFAULT 0, present INTEGER NOT NULL DEFAULT 1);
CREATE TABLE figures (run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, component TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL NOT NULL, low REAL, high REAL);
CREATE INDEX figures_run ON figures(run_id);
"""


@dataclass
class Night:
    """One night (a run directory) as the store holds it."""

    id: int
    dir: str
    ended_at: float
    series: str
    series_fields: dict
    label: str | None
    exit_code: int | None
    failed: bool
    failed_components: list
    rebuilt: bool
    present: bool
    report: str | None
    figures: dict = field(default_factory=dict)  # (component, metric) → (value, low, high)

    @property
    def name(self):
        return os.path.basename(self.dir.rstrip(os.sep))

    def usable_for(self, component):
        """True when this night's figures of ``component`` may be judged and be a baseline: the night ended
        with 0 or 1 (a failed criterion; not a breach, a signal, bad usage or a killed master) and this
        component passed. A suite night where one flaky component failed its criterion keeps the other
        components' figures: on a shared 2-core machine most ci nights have one (measured: 2 of 2)."""
        return self.exit_code in (0, 1) and component not in self.failed_components


@dataclass
class Loaded:
    """What :func:`open_store` found: the nights in time order, and what it had to say about the root."""

    nights: list
    warnings: list
    skipped: list  # (dir name, why)
    added: int


def store_path(root):
    return os.path.join(root, STORE_FILE)


def open_store(root, rebuild=False, now=None):
    """Bring ``ROOT/history.sqlite`` up to date with ``root``'s run directories and return every night
    (:class:`Loaded`). ``rebuild``: start from an empty store. Raises :class:`UsageError` for a root that
    is not a directory, a store from a newer loadgen (unless ``rebuild``), or a root with no night at all."""
    if not os.path.isdir(root):
        raise UsageError(f"{root}: not a directory (give the nightly root that holds the run directories)")
    path = store_path(root)
    warnings = []
    try:
        if rebuild or not os.path.exists(path):
            con = _fresh(path)
        else:
            try:
                con = _open_existing(path)
            except sqlite3.DatabaseError as e:
                warnings.append(f"{path}: corrupt store ({e}); rebuilt from the run directories")
                con = _fresh(path)
        try:
            with con:
                skipped, added = _sync(con, root, warnings, time.time() if now is None else now)
            nights = _nights(con)
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:  # a store that cannot be made or written (a directory there, a full disk)
        raise UsageError(f"{path}: cannot keep the history's store here: {getattr(e, 'strerror', None) or e}") from None
    if not nights:
        why = "; ".join(f"{n}: {w}" for n, w in skipped[:3])
        raise UsageError(f"{root}: no runs to judge (no run directory with a report{': ' + why if why else ''})")
    return Loaded(nights, warnings, skipped, added)


def _connect(path):
    con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)
    con.execute("PRAGMA foreign_keys = ON")
    return con


def _fresh(path):
    """A new empty store at ``path``: made beside it and renamed over it, so a store is never half made."""
    tmp = f"{path}.{os.getpid()}.tmp"
    for p in (tmp, tmp + "-journal"):
        if os.path.exists(p):
            os.unlink(p)
    con = _connect(tmp)
    with con:
        con.executescript(_DDL)
        con.executemany("INSERT INTO meta VALUES (?, ?)",
                        [("schema_version", str(SCHEMA_VERSION)), ("written_by", __version__)])
    con.close()
    os.replace(tmp, path)
    return _connect(path)


def _open_existing(path):
    """The store at ``path``; :class:`sqlite3.DatabaseError` when it is not a store this loadgen can read
    (corrupt, another file, tables missing); :class:`UsageError` when a newer loadgen wrote it."""
    con = _connect(path)
    try:
        con.execute("PRAGMA quick_check").fetchall()
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
        version = int(rows.get("schema_version", "0"))
    except (sqlite3.DatabaseError, ValueError) as e:
        con.close()
        raise sqlite3.DatabaseError(str(e)) from None
    if version > SCHEMA_VERSION:
        con.close()
        raise UsageError(f"{path}: store written by a newer loadgen ({rows.get('written_by', '?')}, schema {version} > "
                         f"{SCHEMA_VERSION}); use that loadgen, or --rebuild it from the run directories")
    if version < 1:
        con.close()
        raise sqlite3.DatabaseError(f"no schema_version (schema {version})")
    return con


def run_dirs(root):
    """The run directories directly under ``root`` (sorted by name; hidden entries and symlinks such as
    ``latest`` are not nights of their own)."""
    out = []
    for name in sorted(os.listdir(root)):
        p = os.path.join(root, name)
        if name.startswith(".") or os.path.islink(p) or not os.path.isdir(p):
            continue
        out.append(p)
    return out


def _sync(con, root, warnings, now):
    """Read every new or rewritten report of ``root`` into ``con``; mark vanished directories. Returns
    ``(skipped, added)``."""
    from ..report.compare import REPORT_NAMES

    known = {d: (i, m) for i, d, m in con.execute("SELECT id, dir, report_mtime FROM runs")}
    seen, skipped, added = set(), [], 0
    for d in run_dirs(root):
        name = os.path.basename(d)
        seen.add(name)
        reports = [os.path.join(d, n) for n in REPORT_NAMES if os.path.isfile(os.path.join(d, n))]
        report_file = max(reports, key=os.path.getmtime) if reports else None
        mtime = os.path.getmtime(report_file) if report_file else None
        if name in known and known[name][1] == mtime:
            continue  # unchanged (or a killed night already rebuilt, still without a report of its own)
        try:
            report, rebuilt = _read_night(d, report_file, now)
        except _Skip as e:
            skipped.append((name, str(e)))
            continue
        if name in known:
            con.execute("DELETE FROM runs WHERE id = ?", (known[name][0],))
        _insert(con, name, report_file, mtime, report, rebuilt)
        added += 1
    gone = [(n,) for n in known if n not in seen]
    con.executemany("UPDATE runs SET present = 0 WHERE dir = ?", gone)
    for name, why in skipped:
        warnings.append(f"{name}: skipped: {why}")
    return skipped, added


class _Skip(Exception):
    """A run directory that gives no night (why: the message)."""


def _read_night(d, report_file, now):
    """``(report dict, rebuilt)`` of run directory ``d``; :class:`_Skip` naming why there is none."""
    from ..report.compare import load_report
    from ..streams import EVENTS, TIMESERIES

    if report_file:
        try:
            return load_report(report_file)[1], False
        except UsageError as e:
            raise _Skip(f"unreadable report ({e})") from None
    streams = [os.path.join(d, n) for n in (EVENTS, TIMESERIES) if os.path.isfile(os.path.join(d, n))]
    if not streams:
        raise _Skip("no report and no streams")
    if now - max(os.path.getmtime(p) for p in streams) < LIVE_STREAM_AGE_S:
        raise _Skip("no report yet and its streams changed in the last "
                    f"{LIVE_STREAM_AGE_S:.0f} s (a run still going?)")
    from ..report.rebuild import rebuild

    try:  # a killed night: its report rebuilt from its streams in memory (the directory is not written)
        report = rebuild(d)
    except (UsageError, OSError, TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise _Skip(f"no report, and its streams give none ({type(e).__name__}: {e})") from None
    return json.loads(json.dumps(report, default=str)), True


def _insert(con, name, report_file, mtime, report, rebuilt):
    md = report.get("metadata") or {}
    failed_components = [d.get("test_name") for d in report.get("detailed_metrics") or []
                         if isinstance(d, dict) and S.component_failed(d)]
    code = report.get("exit_code")
    failed = bool(code) or bool(failed_components) or not report.get("detailed_metrics")
    ended = md.get("ended_at")
    if not isinstance(ended, (int, float)):
        ended = mtime or 0.0
    fields = S.series_fields(report)
    label = md.get("label")
    cur = con.execute(
        "INSERT INTO runs (dir, report, report_mtime, ended_at, series, series_fields, label, exit_code, failed, "
        "failed_components, rebuilt, present) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        (name, os.path.basename(report_file) if report_file else None, mtime, float(ended), S.series_key(fields),
         json.dumps(fields, sort_keys=True, default=str), label if isinstance(label, str) else None,
         code if isinstance(code, int) else None, int(failed), json.dumps(failed_components), int(rebuilt)))
    con.executemany("INSERT INTO figures VALUES (?, ?, ?, ?, ?, ?)",
                    [(cur.lastrowid, *row) for row in S.figures(report)])


def _nights(con):
    """Every night of the store, oldest first, with its figures."""
    nights, by_id = [], {}
    for row in con.execute("SELECT id, dir, ended_at, series, series_fields, label, exit_code, failed, "
                           "failed_components, rebuilt, present, report FROM runs ORDER BY ended_at, dir"):
        n = Night(row[0], row[1], row[2], row[3], json.loads(row[4] or "{}"), row[5], row[6], bool(row[7]),
                  json.loads(row[8] or "[]"), bool(row[9]), bool(row[10]), row[11])
        nights.append(n)
        by_id[n.id] = n
    for run_id, comp, metric, value, low, high in con.execute("SELECT * FROM figures"):
        by_id[run_id].figures[(comp, metric)] = (value, low, high)
    _inherit_series(nights)
    return nights


def _inherit_series(nights):
    """A night rebuilt from its streams has no record of its settings (``metadata.run``, the command): it
    belongs to the series of the night before it of the same kind and machine (it is drawn there, marked)."""
    last = {}
    for n in nights:
        f = n.series_fields
        tag = (f.get("kind"), json.dumps(f.get("machine"), sort_keys=True))
        if n.rebuilt and f.get("run") is None and tag in last:
            n.series, n.series_fields = last[tag].series, last[tag].series_fields
        else:
            last[tag] = n
