"""A fleet run's per-machine table in every format: summary.txt, report.html and junit.xml.

A fleet report carries a ``fleet`` key (written by ``loadgen/fleet/``):
scheduler, shard counts, start skew, delivery delay and one row per shard.
These renderers are pure; the data itself is merged in ``fleet/merge.py``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

FLEET_HEADERS = ["shard", "host", "worker", "status", "share", "ops", "ops/s", "p99 ms", "peak MB", "breaches",
                 "start skew ms", "max delay s"]


def fleet_rows(fleet):
    """The per-machine table (list of lists, :data:`FLEET_HEADERS`) of a report's ``fleet`` dict."""
    rows = []
    for s in fleet.get("shards") or []:
        share = s.get("share") or {}
        share_text = "—"
        if share:
            unit = "ops/s" if share.get("model") == "open" else "in flight"
            share_text = f"{share.get('mine'):g}/{share.get('total'):g} {unit}"
        p99 = s.get("p99_ms")
        p99_text = "—" if p99 is None else f"{p99:.1f}" + ("*" if s.get("p99_basis") != "histogram" else "")
        skew = s.get("start_offset_ms")
        delay = s.get("max_delivery_delay_s")
        rows.append([s.get("index"), s.get("host"), s.get("worker"), s.get("status"), share_text,
                     s.get("operations"), s.get("throughput"), p99_text,
                     None if s.get("peak_memory_mb") is None else round(s["peak_memory_mb"], 1),
                     s.get("breaches"), None if skew is None else round(skew, 1),
                     None if delay is None else round(delay, 2)])
    return rows


def render_fleet_text(report):
    """Lines (list of str) of summary.txt's FLEET section."""
    from tabulate import tabulate

    fleet = report.get("fleet") or {}
    lines = ["FLEET", "=====",
             f"Scheduler: {fleet.get('scheduler')}  shards: {fleet.get('shards_finished')}/{fleet.get('shard_count')} "
             f"finished, {fleet.get('shards_lost')} lost",
             f"Start skew between shards: {_fmt_ms(fleet.get('start_skew_ms'))}; "
             f"per-second delivery delay: max {_fmt_s(fleet.get('max_delivery_delay_s'))}"]
    lines.append(tabulate(fleet_rows(fleet), headers=FLEET_HEADERS))
    if any(s.get("p99_basis") not in (None, "histogram") for s in fleet.get("shards") or []):
        lines.append("* p99 of a lost shard: its worst streamed second (its histograms never arrived)")
    for s in fleet.get("shards") or []:
        if s.get("reason"):
            lines.append(f"Shard {s.get('index')} ({s.get('host')}): {s['reason']}")
    for w in fleet.get("warnings") or []:
        lines.append(f"Warning: {w}")
    return lines


def render_fleet_html(report, table, esc):
    """report.html's fleet section (str); ``table(head, rows)`` and ``esc`` are the page's helpers (html.py)."""
    fleet = report.get("fleet") or {}
    notes = [f"Scheduler <code>{esc(fleet.get('scheduler'))}</code> — {esc(fleet.get('shards_finished'))}/"
             f"{esc(fleet.get('shard_count'))} shards finished, {esc(fleet.get('shards_lost'))} lost. "
             f"Start skew {esc(_fmt_ms(fleet.get('start_skew_ms')))}; per-second delivery delay max "
             f"{esc(_fmt_s(fleet.get('max_delivery_delay_s')))}. Latency percentiles above merge every shard's "
             "HDR histogram exactly."]
    for s in fleet.get("shards") or []:
        if s.get("reason"):
            notes.append(f"Shard {esc(s.get('index'))} ({esc(s.get('host'))}): {esc(s['reason'])}")
    for w in fleet.get("warnings") or []:
        notes.append(f"Warning: {esc(w)}")
    return ("<section id='fleet'><h2>Fleet (one shard per machine)</h2>"
            + "".join(f"<p class='note'>{n}</p>" for n in notes)
            + table(FLEET_HEADERS, fleet_rows(fleet)) + "</section>")


def fleet_junit_suite(report, stamp, hostname, index):
    """A JUnit ``<testsuite>`` element for the fleet: one case per shard; a lost shard is an error.

    ``stamp``: the suite's ISO 8601 timestamp; ``hostname``; ``index``: the
    suite's ``id`` (after the components' suites).
    """
    fleet = report.get("fleet") or {}
    suite = ET.Element("testsuite", name="loadgen.fleet", timestamp=stamp, hostname=hostname, id=str(index),
                       package="loadgen.fleet")
    props = ET.SubElement(suite, "properties")
    for key in ("scheduler", "shard_count", "shards_lost", "start_skew_ms", "max_delivery_delay_s"):
        ET.SubElement(props, "property", name=key, value=str(fleet.get(key)))
    errors = failures = 0
    shards = fleet.get("shards") or []
    for s in shards:
        case = ET.SubElement(suite, "testcase", name=f"shard {s.get('index')} on {s.get('host') or '?'}",
                             classname="loadgen.fleet", time=f"{float(s.get('duration_s') or 0.0):.3f}")
        status = s.get("status")
        if status == "lost" or status == "error":
            errors += 1
            el = ET.SubElement(case, "error", message=str(s.get("reason") or status),
                               type="ShardLost" if status == "lost" else "ShardError")
            el.text = str(s.get("reason") or status)
        elif s.get("exit_code"):
            failures += 1
            el = ET.SubElement(case, "failure", message=f"shard exit code {s.get('exit_code')}", type="ShardFailed")
            el.text = f"shard exit code {s.get('exit_code')}"
    if not shards:
        ET.SubElement(suite, "testcase", name="no shard", classname="loadgen.fleet", time="0")
    suite.set("tests", str(max(1, len(shards))))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{float((report.get('metadata') or {}).get('duration_seconds') or 0.0):.3f}")
    ET.SubElement(suite, "system-out").text = "\n".join(
        f"shard {s.get('index')} {s.get('host')} {s.get('status')} run dir {s.get('run_dir')}" for s in shards)
    ET.SubElement(suite, "system-err").text = "\n".join(str(w) for w in fleet.get("warnings") or [])
    return suite


def _fmt_ms(v):
    return "—" if v is None else f"{v:.1f} ms"


def _fmt_s(v):
    return "—" if v is None else f"{v:.2f} s"
