"""``ROOT/history.html``: the trend page, self-contained like ``report.html`` (whose head, style and escaping
it shares: ``loadgen.report.html``).

For the newest series: one chart per component, a panel per metric across
nights (inline SVG drawn here: matplotlib, which draws ``report.html``'s
charts, took 3.5 s for a suite's 8 components, over the 2 s the whole command
has; and an SVG dot can link to its night's report):
usable nights as dots joined by a line, failed nights as red crosses (kept,
never a baseline), each segment's mean as a horizontal line over its nights,
each change point as a dashed vertical line (red: regression, green:
improvement). Below: the changes table and every night of the root, each
linked to its ``report.html`` (or its report's JSON when the page was pruned).
Older series are listed with what started the next one.
"""

from __future__ import annotations

import os

from ..report.html import HTML_FILE, PAGE_HEAD, PAGE_SCRIPT, escape as _e
from ..streams import atomic_write
from .series import CORE_METRICS

PANEL_W, PANEL_H = 470, 150  # px; two panels a row fit the page's 1000 px
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 48, 8, 18, 16  # px around a panel's plot area
AXIS_COLOUR = "#c9ced8"
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
             "<style>.panels { display: flex; flex-wrap: wrap; gap: 6px; } svg.trend { border: 1px solid #e6e9ef; }"
             "</style>",
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
        parts.append(_changes_table(summary["root"], cur["changes"], {n["night"]: n for n in cur["nights"]}))
    else:
        parts.append("<p>None found.</p>")
    parts.append("</section><section id='charts'><h2>Charts</h2>")
    by_comp = {}
    for key in sorted(current.segments, key=_metric_order):
        by_comp.setdefault(key[0], []).append(key)
    if not by_comp:
        parts.append(f"<p class='note'>No figure has {_e(summary['min_nights'])} usable nights in this series yet.</p>")
    links = {n.id: _a(summary["root"], n) for n in current.nights}  # looked up once a night, not once a dot
    for comp, keys in by_comp.items():
        parts.append(_chart(comp, keys, current, links))
    parts.append("</section><section id='nights'><h2>Nights</h2>")
    parts.append(_nights_table(summary))
    parts.append("</section><section id='series'><h2>Series</h2>")
    parts.append(_series_table(summary))
    parts.append("</section>")
    parts.append(f"<footer>loadgen history · store <code>{_e(summary['store'])}</code></footer>")
    parts.append(PAGE_SCRIPT)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _target(root, night, report):
    """The href of a night's report beside the page: its report.html, else (a pruned night keeps only its
    reports) its report's JSON, else None (the directory is gone)."""
    if os.path.isfile(os.path.join(root, night, HTML_FILE)):
        return f"{night}/{HTML_FILE}"
    if report and os.path.isfile(os.path.join(root, night, report)):
        return f"{night}/{report}"
    return None


def _link(root, n):
    """A night's name linked to its report (:func:`_target`), or marked as gone."""
    href = _target(root, n["night"], n["report"] and os.path.basename(n["report"]))
    if href:
        return f"<a href='{_e(href)}'>{_e(n['night'])}</a>"
    return _e(n["night"]) + " <small>(directory gone; figures kept)</small>"


def _changes_table(root, changes, nights):
    rows = []
    for c in changes:
        cls = "fail" if c["direction"] == "regression" else "pass"
        night = nights.get(c["night"], {"night": c["night"], "dir_present": False})
        before, after = format(c["before"], ".4g"), format(c["after"], ".4g")
        pct, p = format(c["change_pct"], "+.1f") + "%", format(c["p"], ".1g")
        rows.append(f"<tr><td>{_e(c['component'])}</td><td>{_e(c['metric'])}</td><td>{_link(root, night)}</td>"
                    f"<td>{_e(c['label'] or '—')}</td><td class='num'>{_e(before)}</td><td class='num'>{_e(after)}</td>"
                    f"<td class='num'>{_e(pct)}</td><td class='num'>{_e(p)}</td><td class='{cls}'>{_e(c['direction'])}"
                    f"{' (current)' if c['current'] else ''}{' NEW' if c['new'] else ''}</td></tr>")
    head = ("component", "metric", "began", "label", "before", "after", "change", "p", "")
    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _nights_table(summary):
    root = summary["root"]
    rows = []
    for s in summary["series"]:
        for n in s["nights"]:
            status = "failed" if n["failed"] else "ok"
            extra = (f"; failed: {', '.join(n['failed_components'])}" if n["failed_components"] else "") + \
                ("; rebuilt from streams" if n["rebuilt_from_streams"] else "")
            rows.append((n["ended_at"], f"<tr><td>{_link(root, n)}</td><td>{_e(n['label'] or '—')}</td>"
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


def _chart(comp, keys, verdict, links):
    """One component's figure: a panel (inline SVG) per metric over the series' nights."""
    index = {n.id: i for i, n in enumerate(verdict.nights)}
    panels = "".join(_panel(comp, key, verdict, index, links) for key in keys)
    caption = ("Dots: usable nights, each a link to its report (hover: night, value, label); red crosses: failed "
               "nights (kept, never a baseline); yellow: segment means; dashed: change points (red regression, green "
               "improvement). x: night number in the series.")
    return (f"<figure class='trend'><div class='panels'>{panels}</div>"
            f"<figcaption><b>{_e(comp)}.</b> {_e(caption)}</figcaption></figure>")


def _panel(comp, key, verdict, index, links):
    """One metric's panel: ``<svg class='trend' data-component data-metric>`` (drawn here, not with matplotlib:
    8 components' panels took 3.5 s through matplotlib and 20 ms so, and a night's dot can link to its report)."""
    used, seg = verdict.segments[key]
    pts = [(index[n.id], n.figures[key][0], n) for n in verdict.nights if key in n.figures]
    good = [p for p in pts if p[2].usable_for(comp)]
    bad = [p for p in pts if not p[2].usable_for(comp)]
    lo, hi = min(p[1] for p in pts), max(p[1] for p in pts)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    n_x = max(len(verdict.nights) - 1, 1)
    left, top, w, h = PLOT_LEFT, PLOT_TOP, PANEL_W - PLOT_LEFT - PLOT_RIGHT, PANEL_H - PLOT_TOP - PLOT_BOTTOM

    def X(i):
        return left + w * i / n_x

    def Y(v):
        return top + h * (hi - v) / (hi - lo)

    out = [f"<svg class='trend' data-component='{_e(comp)}' data-metric='{_e(key[1])}' width='{PANEL_W}' "
           f"height='{PANEL_H}' viewBox='0 0 {PANEL_W} {PANEL_H}' xmlns='http://www.w3.org/2000/svg' role='img'>",
           f"<title>{_e(comp)} {_e(key[1])}</title>",
           f"<rect x='{left}' y='{top}' width='{w}' height='{h}' fill='none' stroke='{AXIS_COLOUR}'/>",
           f"<text x='4' y='12' font-size='11'>{_e(key[1])}</text>",
           f"<text x='{left - 3}' y='{top + 8}' font-size='9' text-anchor='end'>{_e(_num(hi))}</text>",
           f"<text x='{left - 3}' y='{top + h}' font-size='9' text-anchor='end'>{_e(_num(lo))}</text>",
           f"<text x='{left}' y='{PANEL_H - 4}' font-size='9'>1</text>",
           f"<text x='{left + w}' y='{PANEL_H - 4}' font-size='9' text-anchor='end'>{n_x + 1}</text>"]
    for c in seg.changes:
        x = (X(index[used[c.index - 1].id]) + X(index[used[c.index].id])) / 2
        colour = REGRESSION_COLOUR if c.worse else IMPROVEMENT_COLOUR
        out.append(f"<line class='change' x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{top + h}' stroke='{colour}' "
                   f"stroke-dasharray='4 3'><title>{_e(f'{c.change_pct:+.1f}% from {used[c.index].name}')}</title></line>")
    for (a, b), mean in zip(seg.bounds, seg.means):
        out.append(f"<line class='segment' x1='{X(index[used[a].id]):.1f}' y1='{Y(mean):.1f}' "
                   f"x2='{X(index[used[b - 1].id]):.1f}' y2='{Y(mean):.1f}' stroke='{SEGMENT_COLOUR}' stroke-width='2'/>")
    if good:
        line = " ".join(f"{X(i):.1f},{Y(v):.1f}" for i, v, _ in good)
        out.append(f"<polyline points='{line}' fill='none' stroke='{LINE_COLOUR}' stroke-width='1'/>")
    for i, v, n in good:
        out.append(f"{links[n.id]}<circle cx='{X(i):.1f}' cy='{Y(v):.1f}' r='2.2' fill='{LINE_COLOUR}'>"
                   f"<title>{_e(_tip(n, v))}</title></circle></a>")
    for i, v, n in bad:
        x, y = X(i), Y(v)
        out.append(f"{links[n.id]}<path class='failed' d='M{x - 3:.1f},{y - 3:.1f}L{x + 3:.1f},{y + 3:.1f}M{x - 3:.1f},"
                   f"{y + 3:.1f}L{x + 3:.1f},{y - 3:.1f}' stroke='{FAILED_COLOUR}' stroke-width='1.5'>"
                   f"<title>{_e(_tip(n, v) + ' — failed, never a baseline')}</title></path></a>")
    out.append("</svg>")
    return "".join(out)


def _a(root, n):
    """An SVG link to the night's report beside the page (:func:`_target`); an inert group when it is gone."""
    href = _target(root, n.name, n.report)
    return f"<a href='{_e(href)}'>" if href else "<a>"


def _tip(n, v):
    return f"{n.name}: {_num(v)}" + (f" (label {n.label})" if n.label else "")


def _num(v):
    return format(v, ".4g")
