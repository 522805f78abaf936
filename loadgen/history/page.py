"""``ROOT/history.html``: the trend page, self-contained like ``report.html`` (whose head, style and escaping
it shares: ``loadgen.report.html``).

For the newest series: one chart per component, a panel per metric across
nights (matplotlib, Agg, PNG as ``data:`` URIs, as ``report/charts.py``):
usable nights as dots joined by a line, failed nights as red crosses (kept,
never a baseline), each segment's mean as a horizontal line over its nights,
each change point as a dashed vertical line (red: regression, green:
improvement). Below: the changes table and every night of the root, each
linked to its ``report.html`` (or its report's JSON when the page was pruned).
Older series are listed with what started the next one.
"""

from __future__ import annotations

import base64
import io
import math

from ..report.charts import FIG_DPI
from ..report.html import PAGE_HEAD, PAGE_SCRIPT, escape as _e
from ..streams import atomic_write
from .series import CORE_METRICS

PANEL_W_IN, PANEL_H_IN = 4.4, 1.9  # one metric's panel; two panels a row
COLUMNS = 2
REGRESSION_COLOUR, IMPROVEMENT_COLOUR, FAILED_COLOUR = "#b42318", "#17803d", "#b42318"
LINE_COLOUR, SEGMENT_COLOUR = "#3b6fb6", "#e0a800"


def write_page(path, summary, verdicts):
    """Write the page atomically; returns its path."""
    atomic_write(path, render_page(summary, verdicts))
    return path


def _metric_order(key):
    comp, metric = key
    core = CORE_METRICS.index(metric) if metric in CORE_METRICS else len(CORE_METRICS)
    return comp, core, metric


def render_page(summary, verdicts):
    """The page (str)."""
    current = next(v for v, s in zip(verdicts, summary["series"]) if s["current"])
    cur = next(s for s in summary["series"] if s["current"])
    verdict = summary["verdict"]
    ok = verdict in ("ok", "baseline", "new_series")
    parts = [PAGE_HEAD.format(title=_e(f"loadgen history — {verdict}")),
             "<header><h1>loadgen history</h1>",
             f"<p class='status {'pass' if ok else 'fail'}'>{_e(verdict.upper().replace('_', ' '))} — newest night "
             f"{_e(summary['newest']['night'])} — exit code {_e(summary['exit_code'])}</p>",
             f"<p>{_e(summary['root'])}: {_e(summary['nights'])} nights in {_e(len(summary['series']))} series. "
             f"Newest series <code>{_e(cur['key'])}</code>: {_e(len(cur['nights']))} nights, "
             f"{_e(cur['figures_judged'])} figures judged (a figure needs {_e(summary['min_nights'])} usable nights)."
             "</p></header>"]
    regs = cur["regressions"]
    if regs:
        parts.append("<p class='note'>Regressed: " + "; ".join(
            _e(f"{r['component']} {r['metric']} {r['change_pct']:+.1f}% since {r['night']}") for r in regs) + "</p>")
    parts.append("<section id='changes'><h2>Change points (newest series)</h2>")
    if cur["changes"]:
        parts.append(_changes_table(cur["changes"], {n["night"]: n for n in cur["nights"]}))
    else:
        parts.append("<p>None found.</p>")
    parts.append("</section><section id='charts'><h2>Charts</h2>")
    by_comp = {}
    for key in sorted(current.segments, key=_metric_order):
        by_comp.setdefault(key[0], []).append(key)
    if not by_comp:
        parts.append(f"<p class='note'>No figure has {_e(summary['min_nights'])} usable nights in this series yet.</p>")
    for comp, keys in by_comp.items():
        parts.append(_chart(comp, keys, current))
    parts.append("</section><section id='nights'><h2>Nights</h2>")
    parts.append(_nights_table(summary))
    parts.append("</section><section id='series'><h2>Series</h2>")
    parts.append(_series_table(summary))
    parts.append("</section>")
    parts.append(f"<footer>loadgen history · store <code>{_e(summary['store'])}</code></footer>")
    parts.append(PAGE_SCRIPT)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _link(n):
    """A night's name linked to its report.html (beside the page: ROOT/NIGHT/report.html), else its report."""
    if n.get("dir_present") and n.get("report"):
        return f"<a href='{_e(n['night'])}/report.html'>{_e(n['night'])}</a>"
    return _e(n["night"]) + " <small>(pruned)</small>" if not n.get("dir_present") else _e(n["night"])


def _changes_table(changes, nights):
    rows = []
    for c in changes:
        cls = "fail" if c["direction"] == "regression" else "pass"
        night = nights.get(c["night"], {"night": c["night"], "dir_present": False})
        before, after = format(c["before"], ".4g"), format(c["after"], ".4g")
        pct, p = format(c["change_pct"], "+.1f") + "%", format(c["p"], ".1g")
        rows.append(f"<tr><td>{_e(c['component'])}</td><td>{_e(c['metric'])}</td><td>{_link(night)}</td>"
                    f"<td>{_e(c['label'] or '—')}</td><td class='num'>{_e(before)}</td><td class='num'>{_e(after)}</td>"
                    f"<td class='num'>{_e(pct)}</td><td class='num'>{_e(p)}</td><td class='{cls}'>{_e(c['direction'])}"
                    f"{' (current)' if c['current'] else ''}{' NEW' if c['new'] else ''}</td></tr>")
    head = ("component", "metric", "began", "label", "before", "after", "change", "p", "")
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _nights_table(summary):
    rows = []
    for s in summary["series"]:
        for n in s["nights"]:
            status = "failed" if n["failed"] else "ok"
            extra = (f"; failed: {', '.join(n['failed_components'])}" if n["failed_components"] else "") + \
                ("; rebuilt from streams" if n["rebuilt_from_streams"] else "")
            rows.append((n["ended_at"], f"<tr><td>{_link(n)}</td><td>{_e(n['label'] or '—')}</td>"
                                        f"<td><code>{_e(s['key'])}</code></td><td class='num'>{_e(n['exit_code'])}</td>"
                                        f"<td class='{'fail' if n['failed'] else 'pass'}'>{_e(status + extra)}</td></tr>"))
    rows.sort(key=lambda r: r[0], reverse=True)
    head = ("night", "label", "series", "exit", "status")
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(r for _, r in rows) + "</tbody></table>")


def _series_table(summary):
    rows = "".join(f"<tr><td><code>{_e(s['key'])}</code>{' (newest)' if s['current'] else ''}</td>"
                   f"<td>{_e(s['nights'][0]['night'])} → {_e(s['nights'][-1]['night'])}</td>"
                   f"<td class='num'>{_e(len(s['nights']))}</td><td>{_e(s['started_by'] or 'the first series')}</td></tr>"
                   for s in summary["series"])
    return ("<table><thead><tr><th>series</th><th>nights</th><th>count</th><th>began with</th></tr></thead><tbody>"
            + rows + "</tbody></table>")


def _chart(comp, keys, verdict):
    """One component's figure: a panel per metric over the series' nights (x: night number in the series)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    index = {n.id: i for i, n in enumerate(verdict.nights)}
    rows = math.ceil(len(keys) / COLUMNS)
    fig = Figure(figsize=(PANEL_W_IN * COLUMNS, PANEL_H_IN * rows), dpi=FIG_DPI)
    FigureCanvasAgg(fig)
    for k, key in enumerate(keys):
        ax = fig.add_subplot(rows, COLUMNS, k + 1)
        used, seg = verdict.segments[key]
        xs = [index[n.id] for n in used]
        ys = [n.figures[key][0] for n in used]
        ax.plot(xs, ys, "o-", color=LINE_COLOUR, markersize=2.5, linewidth=0.8)
        bad = [(index[n.id], n.figures[key][0]) for n in verdict.nights if key in n.figures and not n.usable_for(key[0])]
        if bad:
            ax.plot([b[0] for b in bad], [b[1] for b in bad], "x", color=FAILED_COLOUR, markersize=5)
        for (a, b), mean in zip(seg.bounds, seg.means):
            ax.hlines(mean, xs[a], xs[b - 1], colors=SEGMENT_COLOUR, linewidth=2)
        for c in seg.changes:
            ax.axvline(xs[c.index] - 0.5, color=REGRESSION_COLOUR if c.worse else IMPROVEMENT_COLOUR,
                       linestyle="--", linewidth=1)
        ax.set_title(key[1], fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    caption = ("Dots: usable nights; red crosses: failed nights (never a baseline); yellow: segment means; dashed: "
               "change points (red regression, green improvement). x: night number in the series.")
    return (f"<figure><img class='chart' alt='{_e(comp)}' src='data:image/png;base64,{data}'>"
            f"<figcaption><b>{_e(comp)}.</b> {_e(caption)}</figcaption></figure>")
