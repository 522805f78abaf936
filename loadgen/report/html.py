"""``report.html``: one self-contained page with the summary, criteria, tables and charts.

The page needs no network: the charts (``charts.py``) are PNGs embedded as
``data:`` URIs, the style and the one small script are inline, and a
Content-Security-Policy forbids anything else. matplotlib is imported only
when a page is written, so runs and ``--help`` never pay for it.

Sections, at a glance first: the verdict with operations succeeded and
components passed, what failed (each failed criterion, measured vs limit),
the top errors, safety breaches; then the charts and the recommendations;
then the details, each table folded (``<details>``) when it is long:
components, every criterion, the fleet's per-machine table (``fleet.py``),
the ops of a mix, named measurements, checks, accounting, the run,
notable events, thresholds. Every value is HTML-escaped, and cleaned of the
characters HTML cannot carry (control characters, lone surrogates,
noncharacters: replaced by U+FFFD), names included. The closing
script records how many chart images decoded in
``<body data-charts-ok="N/M">`` — a check that headless browsers (and the
tests) can read back.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import os

from ..errors import UsageError
from ..streams import EVENTS, TIMESERIES, atomic_write, read_jsonl
from .charts import build_charts
from .fleet import render_fleet_html
from .text import criterion_text, failed_components, operations_rate, top_errors
from .fmt import CHECK_HEAD, MEASURE_HEAD, OP_HEAD, clean_text, fmt_number, named_tables, op_table

HTML_FILE = "report.html"
log = logging.getLogger("loadgen.report")

MAX_EVENT_ROWS = 200  # the events table; a pathological run may log thousands
NOTABLE_EVENTS = ("breach", "threshold_exceeded", "worker_crash", "worker_killed", "timeout", "stop", "monitor_lost", "monitor_error",
                  "worker_error", "breaker")


def write_html(run_dir, report):
    """Write ``RUN_DIR/report.html`` atomically; returns its path.

    Reads ``timeseries.jsonl`` and ``events.jsonl`` of ``run_dir`` when they
    exist (a missing or unreadable stream gives empty charts, not an error).
    """
    timeseries = _read_stream(os.path.join(run_dir, TIMESERIES))
    events = _read_stream(os.path.join(run_dir, EVENTS))
    path = os.path.join(run_dir, HTML_FILE)
    atomic_write(path, render_html(report, timeseries, events))
    return path


def _read_stream(path):
    """The stream's records (objects only: a line of another JSON type is not a record); [] if unreadable."""
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict)]  # bounded, regular files only
    except (OSError, ValueError, UsageError):
        return []


# ====================================================================== page


def render_html(report, timeseries=(), events=()):
    """The page (str) for a report dict and its run's stream records."""
    try:
        charts, no_charts = build_charts(*_chart_safe((report, list(timeseries), list(events)))), None
    except Exception as e:  # noqa: BLE001 - streams of another shape (`loadgen report` reads any file): a page, no charts
        log.warning("report.html: no charts: %s: %s", type(e).__name__, e)
        charts, no_charts = [], f"The charts could not be drawn from this run's streams ({type(e).__name__}: {e})."
    md = report.get("metadata") or {}
    ex = report.get("executive_summary") or {}
    kind = md.get("kind") or "run"
    code = report.get("exit_code")
    ok = code == 0
    title = f"loadgen — {kind} — {'PASSED' if ok else 'FAILED'}"
    # At a glance first (the verdict, what failed and by how much, the top errors), then the charts, then
    # the long tables folded: a reader finds the answer without scrolling past 48 rows.
    parts = [_HEAD.format(title=_e(title)),
             f"<header><h1>{_e('AI Writing Flow V2 Heavy Load Stress Test' if kind == 'suite' else f'loadgen {kind}')}</h1>",
             f"<p class='status {'pass' if ok else 'fail'}' id='verdict'>{'PASSED' if ok else 'FAILED'} — exit code "
             f"{_e(code)}{_e(_exit_meaning(code))}</p>",
             f"<p class='figures'><span><b>Operations succeeded</b> {_e(operations_rate(report))}</span> "
             f"<span><b>Components passed</b> {_e(ex.get('passed_components', 0))}/"
             f"{_e(ex.get('total_components', 0))}</span></p>",
             "</header>"]
    if md.get("rebuilt_from_streams"):
        parts.append("<p class='note'>Rebuilt from the run's streams (<code>loadgen report</code>): "
                     "latency percentiles of components that did not finish are approximated from per-second "
                     f"percentiles. {_e(md.get('rebuild_note', ''))}</p>")
    parts.append(_failed_section(report))
    parts.append(_errors_section(report))
    parts.append(_breaches_section(report))
    parts.append("<section id='charts'><h2>Charts</h2>")
    if no_charts:
        parts.append(f"<p class='note'>{_e(no_charts)}</p>")
    for chart in charts:
        parts.append(_figure(chart))
    parts.append("</section>")
    parts.append(_list_section("recommendations", "Recommendations", report.get("recommendations") or ["none"]))
    parts.append("<section id='details'><h2>Details</h2>")
    parts.append(_components_section(report))
    parts.append(_criteria_section(report))
    if report.get("fleet"):  # a fleet run (loadgen/fleet/): the per-machine table
        parts.append(render_fleet_html(report, _table, _e))  # a row per machine: short, shown open
    parts.append(_named_section(report))
    parts.append(_accounting_section(report))
    parts.append(_summary_section(report))
    parts.append(_events_section(events))
    parts.append(_thresholds_section(report))
    parts.append("</section>")
    parts.append(f"<footer>Generated by loadgen {_e(md.get('version', ''))} · "
                 f"{_e(md.get('timestamp', ''))} · run directory <code>{_e(md.get('run_dir') or '')}</code></footer>")
    parts.append(_SCRIPT)
    parts.append("</body></html>\n")
    return clean_text("\n".join(parts))  # _e cleans each value; this catches any text that missed it


FOLD_ROWS = 12  # a table longer than this is folded (<details>) under its title; shorter ones show open
EXIT_MEANINGS = {0: "every criterion passed", 1: "a criterion failed", 2: "bad usage, config or target",
                 3: "stopped by a safety breach or a lost guard", 4: "a fleet run lost a shard"}


def _exit_meaning(code):
    if code in EXIT_MEANINGS:
        return f" ({EXIT_MEANINGS[code]})"
    if isinstance(code, int) and code > 128:
        return f" (stopped by signal {code - 128})"
    return ""


def _fold(ident, title, body, rows):
    """A section whose body is folded under its title when it has more than :data:`FOLD_ROWS` rows."""
    opened = " open" if rows <= FOLD_ROWS else ""
    return (f"<details id='{ident}'{opened}><summary>{_e(title)} <span class='count'>({rows} rows)</span>"
            f"</summary>{body}</details>")


def _failed_section(report):
    """What failed, first: each failed component with its failed criteria, measured vs limit, or why it
    failed without one (a stop, nothing ran); one line when every criterion passed."""
    details = {d.get("test_name"): d for d in report.get("detailed_metrics") or []}
    rows = []
    failed = failed_components(report)
    for name, reasons in failed:
        d = details.get(name) or {}
        crits = [c for c in d.get("criteria") or [] if not c.get("passed")]
        for c in crits:
            v = c.get("value")
            rows.append([name, criterion_text(c), "no value" + (f": {c['why']}" if c.get("why") else "")
                         if v is None else fmt_number(v), f"{c.get('op')} {fmt_number(c.get('limit'))}"])
        if not crits:
            rows.append([name, "; ".join(reasons), "—", "—"])
    if not rows:
        total = sum(len(d.get("criteria") or []) for d in details.values())
        return (f"<section id='failed'><h2>Criteria</h2><p class='pass'>Every criterion passed ({total} in "
                f"{len(details)} component{'s' if len(details) != 1 else ''}).</p></section>")
    return ("<section id='failed'><h2>What failed</h2>"
            + _table(["component", "criterion", "measured", "limit"], rows) + "</section>")


def _errors_section(report):
    """The most frequent errors of each component with their count and first message."""
    rows = [[d.get("test_name"), count, message] for d in report.get("detailed_metrics") or []
            for _, count, message in top_errors(d, TOP_ERRORS_SHOWN)]
    if not rows:
        return ""
    rows.sort(key=lambda r: -r[1] if isinstance(r[1], (int, float)) else 0)
    return ("<section id='errors'><h2>Top errors</h2>"
            + _table(["component", "count", "first message"], rows[:TOP_ERRORS_SHOWN * 2]) + "</section>")


TOP_ERRORS_SHOWN = 5


_CHART_TEXT = str.maketrans({"$": "\\$", "\t": " ", "\r": " "})  # no glyph for tab or CR in the charts' font


def _chart_safe(obj):
    """``obj`` with every string (keys too) cleaned for matplotlib: the characters HTML cannot carry
    replaced (a lone surrogate crashes the font renderer, a control character has no glyph), tab and
    CR made spaces, and ``$`` escaped (a pair would be parsed as mathtext). Applied alike to the
    report and the streams, so the names the charts match between them still match. Nesting is
    bounded: the streams are read with ``streams.MAX_JSON_DEPTH``."""
    if isinstance(obj, str):
        return clean_text(obj).translate(_CHART_TEXT)
    if isinstance(obj, dict):
        return {_chart_safe(k) if isinstance(k, str) else k: _chart_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_chart_safe(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_chart_safe(v) for v in obj)
    return obj


_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1000px;
       padding: 0 1em; color: #1d2430; }}
h1 {{ font-size: 1.5em; margin-bottom: .2em; }} h2 {{ font-size: 1.15em; margin-top: 1.8em;
       border-bottom: 1px solid #d8dde6; padding-bottom: .2em; }}
table {{ border-collapse: collapse; margin: .5em 0; }} td, th {{ padding: .25em .7em; border-bottom: 1px solid #e6e9ef;
       text-align: left; vertical-align: top; }}
th {{ background: #f4f6f9; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.status {{ font-weight: 600; font-size: 1.1em; }} .pass {{ color: #17803d; }} .fail {{ color: #b42318; }}
.note {{ background: #fff7e0; border-left: 4px solid #e0a800; padding: .5em .8em; }}
figure {{ margin: 1.2em 0; }} figure img {{ max-width: 100%; height: auto; border: 1px solid #e6e9ef; }}
figcaption {{ color: #4a5466; font-size: .92em; }} code {{ font-size: .92em; }}
.figures {{ font-size: 1.05em; }} .figures span {{ margin-right: 2em; }}
details {{ margin: .6em 0; }} summary {{ cursor: pointer; font-weight: 600; }} .count {{ color: #6b7485; font-weight: 400; }}
h3 {{ font-size: 1em; margin-top: 1.2em; }}
footer {{ margin-top: 2em; color: #6b7485; font-size: .9em; }}
</style></head>
<body>"""

# Counts chart images that decoded; the tests read the attribute from a headless browser's DOM.
_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img.chart"), ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute("data-charts-ok", ok + "/" + imgs.length);
});
</script>"""


def _figure(chart):
    title, caption, png = chart
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img class='chart' alt='{_e(title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_e(title)}.</b> {_e(caption)}</figcaption></figure>")


def _summary_section(report):
    md = report.get("metadata") or {}
    ex = report.get("executive_summary") or {}
    si = md.get("system_info") or {}
    lat = report.get("latency_ms") or {}
    rows = [("Started", _when(md.get("started_at"))), ("Ended", _when(md.get("ended_at"))),
            ("Duration", f"{fmt_number(md.get('duration_seconds'))} s"),
            ("System", f"{si.get('cpu_count', '?')} CPUs, {si.get('total_memory_gb', '?')} GB RAM, {si.get('platform', '')}"),
            ("Command", md.get("command") or "—"), ("Seed", md.get("seed")),
            ("Operations succeeded", operations_rate(report)),
            ("Components passed", f"{ex.get('passed_components', 0)}/{ex.get('total_components', 0)} "
                                  f"({fmt_number((ex.get('overall_success_rate') or 0) * 100)} %)"),
            ("Operations", fmt_number(ex.get("total_operations_executed"))),
            ("Latency (ms)", ", ".join(f"{k} {fmt_number(v)}" for k, v in lat.items()) or "—")]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e('—' if v is None else v)}</td></tr>" for k, v in rows)
    return f"<section id='summary'><h3>Run</h3><table>{body}</table></section>"


def _components_section(report):
    rows = []
    for d in report.get("detailed_metrics") or []:
        lat = d.get("latency_ms") or {}
        rate = (d.get("performance_metrics") or {}).get("success_rate")
        rows.append([d.get("test_name"), "PASSED" if d.get("success") else "FAILED", d.get("total_operations"),
                     "—" if rate is None else f"{rate * 100:.1f} %", fmt_number(d.get("throughput_ops_per_sec")),
                     fmt_number(lat.get("p50")), fmt_number(lat.get("p99")), d.get("max_concurrent_operations"),
                     fmt_number(d.get("peak_memory_mb")), fmt_number(d.get("peak_cpu_percent")), d.get("exit_code"),
                     d.get("stop_reason") or ""])
    head = ["component", "status", "ops", "success", "ops/s", "p50 ms", "p99 ms", "peak in flight",
            "peak MB", "peak CPU %", "exit", "stop reason"]
    return _fold("components", "Components", _table(head, rows, status_col=1), len(rows))


def _criteria_section(report):
    rows = []
    for d in report.get("detailed_metrics") or []:
        for c in d.get("criteria") or []:
            v = c.get("value")
            rows.append([d.get("test_name"), criterion_text(c), "no value" if v is None else fmt_number(v),
                         f"{c.get('op')} {fmt_number(c.get('limit'))}", "PASSED" if c.get("passed") else "FAILED"])
    if not rows:
        return "<section id='criteria'><h3>Criteria</h3><p>No criteria were evaluated.</p></section>"
    return _fold("criteria", "Every criterion",
                 _table(["component", "criterion", "measured", "limit", "result"], rows, status_col=4), len(rows))


def _named_section(report):
    measures, checks = named_tables(report)
    ops = op_table(report)
    out = ""
    if ops:
        out += _fold("ops", "Operations of the mix", "<p class='note'>Each op of a weighted mix: its completed "
                     "operations (timed out and crashed ones count in the totals only).</p>" + _table(OP_HEAD, ops),
                     len(ops))
    if measures:
        out += _fold("measures", "Named measurements", "<p class='note'><code>loadgen.measure</code> blocks (the "
                     "embedded flow's stages among them).</p>" + _table(MEASURE_HEAD, measures), len(measures))
    if checks:
        out += _fold("checks", "Checks", "<p class='note'><code>loadgen.check</code>: passes and fails counted "
                     "without failing the operation.</p>" + _table(CHECK_HEAD, checks), len(checks))
    return out


def _accounting_section(report):
    acc = report.get("accounting") or {}
    if not acc:
        return ""
    rows = [[k, v] for k, v in acc.items()]
    return _fold("accounting", "Accounting", _table(["outcome", "operations"], rows), len(rows))


def _breaches_section(report):
    head = ["metric", "value", "limit", "when", "action"]
    kills = [[b.get("metric"), fmt_number(b.get("value")), fmt_number(b.get("limit")), _when(b.get("detected_at")),
              "killed; pool dead after " + ("—" if b.get("pool_dead_at") is None or b.get("detected_at") is None
                                            else f"{(b['pool_dead_at'] - b['detected_at']) * 1000:.0f} ms")]
             for b in report.get("breaches") or []]
    reported = [[e.get("metric"), fmt_number(e.get("value")), fmt_number(e.get("limit")), _when(e.get("t")),
                 f"reported in {d.get('test_name')}" + (f" ({e['shard']})" if e.get("shard") else "")
                 + "; the run went on"]  # a fleet's shards each pass it: which one
                for d in report.get("detailed_metrics") or [] for e in d.get("thresholds_exceeded") or []]
    if not kills and not reported:
        return ""
    # A breach that killed the pool is news at the top; a CPU threshold passed twenty times is folded.
    return ("<section id='breaches'><h2>Safety: breaches and thresholds exceeded</h2>"
            + (_table(head, kills) if kills else "")
            + (_fold("exceeded", "Thresholds exceeded (reported, not stopped)", _table(head, reported), len(reported))
               if reported else "") + "</section>")


def _events_section(events):
    notable = [e for e in events if e.get("type") in NOTABLE_EVENTS
               or (e.get("type") == "phase" and e.get("name") in ("stop", "end"))]
    if not notable:
        return ""
    # In time order (the streams interleave phases and the journal), each detail as "key value" text.
    notable.sort(key=lambda e: e.get("t") if isinstance(e.get("t"), (int, float)) else float("inf"))
    rows = []
    for e in notable[:MAX_EVENT_ROWS]:
        extra = {k: v for k, v in e.items() if k not in ("t", "type", "phase", "plan", "thresholds")}
        rows.append([_when(e.get("t")), e.get("phase", ""), e.get("type"), _details(extra)[:300]])
    more = len(notable) - MAX_EVENT_ROWS
    tail = f"<p>… and {more} more in <code>events.jsonl</code>.</p>" if more > 0 else ""
    return _fold("events", "Events", _table(["time (UTC)", "phase", "type", "details"], rows) + tail, len(rows))


def _details(fields):
    """``key value · key value`` of an event's fields (nested values as compact JSON)."""
    return " · ".join(f"{k.replace('_', ' ')} {v if isinstance(v, (str, int, float)) else json.dumps(v, default=str)}"
                      for k, v in fields.items() if v is not None)


def _thresholds_section(report):
    th = report.get("thresholds") or {}
    if not th:
        return ""
    rows = [[k, v, THRESHOLD_NOTES.get(k, "")] for k, v in th.items()]
    return _fold("thresholds", "Thresholds", _table(["threshold", "value", "what it is"], rows), len(rows))


# Two windows that read alike: the guards' and the leak verdict's (docs/safety.rst).
THRESHOLD_NOTES = {
    "cpu_window_s": "the CPU guard: machine CPU above max_cpu_percent for this long",
    "growth_window_s": "the leak verdict's fit window (the growth-rate guard fits the last 5 s)",
}


def _list_section(ident, title, items):
    return f"<section id='{ident}'><h2>{_e(title)}</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul></section>"


def _table(head, rows, status_col=None):
    out = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = ""
            if i == status_col:
                cls = " class='pass'" if v == "PASSED" else " class='fail'"
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                cls = " class='num'"
                v = fmt_number(v)  # 1,339 and 0.8125, never 1339.0 or 2.366e+04
            cells.append(f"<td{cls}>{_e('—' if v is None else v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _e(v):
    return html.escape(clean_text(v), quote=True)


def _when(t):
    try:
        return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError, OSError):
        return "—"


# The page's parts that other pages (loadgen/history/page.py: history.html) share, so every loadgen page
# looks alike and escapes alike.
PAGE_HEAD = _HEAD
PAGE_SCRIPT = _SCRIPT
escape = _e
figure_html = _figure

