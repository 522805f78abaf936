"""``report.html``'s charts: PNGs drawn with matplotlib's Agg renderer from a run's streams and report.

:func:`build_charts` returns ``[(title, caption, png bytes)]``; the page
(``html.py``) embeds them. matplotlib is imported only inside
:func:`build_charts` and :func:`_png`, so runs and ``--help`` never pay for it.

Charts, from the run directory's streams and the report:

* throughput and errors over time (phases shaded, crashes marked);
* latency percentiles over time;
* machine CPU and pool memory over time, with the thresholds as lines and
  breaches marked at their detection time;
* the latency per op of a mix over time (``ops_ms`` of the streams);
* the capacity search: throughput with its fitted model, and the statistic the verdict
  judges (mean latency ÷ the mean at 1, with its interval) against the SLO line
  (components whose ``performance_metrics`` carry ``capacity_steps``);
* circuit-breaker state over time (``breaker`` events);
* named measurements (``measures_ms``: ``loadgen.measure`` blocks, the flow's stages among them).

Every chart copes with missing data (a run killed before its first second
was written): it says so instead of failing. The timelines share one x
axis (seconds since the run started) and fixed margins, so their time axes
line up down the page.
"""

from __future__ import annotations

import io
import math

from .fmt import fmt_number, measures_of

FIG_SIZE_IN = (9.0, 3.2)
FIG_DPI = 100
BREAKER_LEVELS = {"closed": 0, "half_open": 1, "open": 2}
PHASE_COLOURS = ("#eef3fb", "#fbf3e8")
LABEL_GAP = 0.09  # the least distance between two span names along the top, as a share of the axis
TIMELINE_MARGINS = {"left": 0.08, "right": 0.79}
TIMELINE_TOP_IN, TIMELINE_BOTTOM_IN = 0.45, 0.55  # title above, time axis below
LABELLED_TOP_IN = 1.05  # the throughput chart also names the phases or scenarios along its top
_LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8, "borderaxespad": 0}  # outside, never over data
LEGEND_LABEL_CHARS = 22  # a legend label longer than this is wrapped onto lines, so it fits beside the plot
LEGEND_MIN_FONT = 5.5  # a legend that still overflows the figure shrinks to this, then moves inside the plot
MAX_OP_LINES = 8  # ops drawn on the per-op latency chart (the most frequent first)
# The breach metrics the memory chart marks (engine/thresholds.py METRIC_*); the CPU chart marks cpu_percent.
MEMORY_METRICS = frozenset({"memory_mb", "available_memory_mb", "memory_growth_mb_per_s"})


def build_charts(report, timeseries, events):
    """``[(title, caption, png bytes)]``: four timeline charts always, the others when there is data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 - Agg, never a GUI backend
    from matplotlib.figure import Figure

    tl = _Timeline(report, timeseries, events)
    charts = [_throughput_chart(Figure, tl), _latency_chart(Figure, tl)]
    chart = _op_latency_chart(Figure, tl, report)
    if chart:
        charts.append(chart)
    charts += [_cpu_chart(Figure, tl, report), _memory_chart(Figure, tl, report)]
    chart = _distribution_chart(Figure, report)
    if chart:
        charts.append(chart)
    for d in report.get("detailed_metrics") or []:
        chart = _capacity_chart(Figure, d)
        if chart:
            charts.append(chart)
    chart = _breaker_chart(Figure, tl, events)
    if chart:
        charts.append(chart)
    # One latency scale for every component's measurement chart: a suite's components compare at a glance.
    top = max([_num(v.get("p99"), 0) for d in report.get("detailed_metrics") or []
               for v in measures_of(d).values() if isinstance(v, dict)] + [0])
    for d in report.get("detailed_metrics") or []:
        chart = _measures_chart(Figure, d, top * 1.05 or None)
        if chart:
            charts.append(chart)
    return charts


class _Timeline:
    """The run's seconds merged over phases, on one x axis: seconds since the run started."""

    def __init__(self, report, timeseries, events):
        rows = [r for r in timeseries if isinstance(r.get("t"), (int, float))]
        md = report.get("metadata") or {}
        starts = [r["t"] for r in rows] + [e["t"] for e in events if isinstance(e.get("t"), (int, float))]
        t0 = md.get("started_at")
        if not isinstance(t0, (int, float)):
            t0 = min(starts) if starts else 0.0
        self.t0 = math.floor(min([t0] + starts))
        merged = {}
        for r in rows:
            m = merged.setdefault(r["t"], {"throughput": 0, "failed": 0, "dropped": 0, "rejected": 0, "in_flight": 0,
                                           "latency": {}, "response": {}, "target_rate": None, "cpu": None,
                                           "memory": None, "rss": None, "ops": {}})
            for op, lat in (r.get("ops_ms") or {}).items() if isinstance(r.get("ops_ms"), dict) else ():
                for k, v in (lat.items() if isinstance(lat, dict) else ()):
                    if _num(v) is not None:
                        m["ops"].setdefault(str(op), {})[k] = max(m["ops"].get(str(op), {}).get(k, 0.0), float(v))
            if isinstance(r.get("response_ms"), dict):  # open model: response time, and the asked rate
                for k, v in r["response_ms"].items():
                    if v is not None:
                        m["response"][k] = max(m["response"].get(k, 0.0), float(v))
                if _num(r.get("target")) is not None:
                    m["target_rate"] = (m["target_rate"] or 0) + r["target"]
            m["throughput"] += _num(r.get("throughput"), 0)
            m["failed"] += _num(r.get("failed"), 0)
            m["dropped"] += _num(r.get("dropped"), 0)
            m["rejected"] += _num(r.get("rejected"), 0)
            m["in_flight"] += _num(r.get("in_flight"), 0)
            for k, v in (r.get("latency_ms") or {}).items():
                if v is not None:
                    m["latency"][k] = max(m["latency"].get(k, 0.0), float(v))
            for key, field in (("cpu", "cpu_percent"), ("memory", "pool_memory_mb"), ("rss", "pool_rss_mb")):
                v = r.get(field)
                if v is not None:
                    m[key] = v if m[key] is None else max(m[key], v)
        self.seconds = sorted(merged)
        self.rows = [merged[t] for t in self.seconds]
        self.x = [t + 0.5 - self.t0 for t in self.seconds]  # a record covers [t, t + 1)
        self.phases = _phase_spans(events, rows)
        for _, _, end in self.phases:  # a second a phase ended inside: its counts cover part of it
            t = math.floor(end)
            if t in merged and end > t:
                merged[t]["partial"] = True
        # A suite is shaded and labelled by scenario; a single scenario by phase.
        self.spans = _scenario_spans(events, self.phases) if len({e.get("name") for e in events
                                                                    if e.get("type") == "scenario"}) > 1 else []
        self.spans = _merge_same(self.spans or self.phases)
        self.phases = _merge_same(self.phases)
        ends = self.x + [self.rel(t) for _, a, b in self.spans for t in (a, b)]
        self.xlim = (min([0.0] + ends), max([1.0] + ends) + 0.5)  # one time axis for every timeline
        self.events = events

    def rel(self, t):
        """``t`` (UNIX seconds) as seconds on the charts' x axis."""
        return t - self.t0

    def series(self, get):
        """``(xs, ys)`` of ``get(second)`` over the run's seconds, the seconds where it is None left out."""
        xs, ys = [], []
        for x, r in zip(self.x, self.rows):
            v = get(r)
            if v is not None:
                xs.append(x)
                ys.append(v)
        return xs, ys

    def decorate(self, ax, label_phases=False):
        """Shade the spans (names along the top when asked) and label the time axis."""
        mids, names = [], []
        for i, (name, start, end) in enumerate(self.spans):
            ax.axvspan(self.rel(start), self.rel(end), color=PHASE_COLOURS[i % 2], zorder=0, lw=0)
            mids.append((self.rel(start) + self.rel(end)) / 2)
            names.append(name)
        if label_phases and names:
            # Names that would overlap their left neighbour are left out (the shading still shows the span).
            gap = LABEL_GAP * (self.xlim[1] - self.xlim[0])
            kept, last = [], None
            for mid, name in sorted(zip(mids, names)):
                if last is None or mid - last >= gap:
                    kept.append((mid, name))
                    last = mid
            top = ax.secondary_xaxis("top")
            top.set_xticks([m for m, _ in kept], [n for _, n in kept], rotation=25, ha="left", fontsize=7,
                           color="#4a5466")
            top.tick_params(length=0, pad=1)
        ax.set_xlim(*self.xlim)
        ax.set_xlabel("seconds since the run started")
        ax.grid(True, alpha=0.3)


def _merge_same(spans):
    """``spans`` with those of one name that overlap or touch made one: a fleet's shards each log the same
    phases and scenarios, which would otherwise be shaded and named once per shard."""
    out = []
    for name, start, end in sorted(spans, key=lambda s: s[1]):
        same = next((i for i in range(len(out) - 1, -1, -1) if out[i][0] == name and start <= out[i][2]), None)
        if same is None:
            out.append((name, start, end))
        else:
            out[same] = (name, out[same][1], max(out[same][2], end))
    return out


def _scenario_spans(events, phases):
    """``[(scenario, start t, end t)]`` from ``scenario`` events (a suite); [] when there are none."""
    starts = [(e["t"], str(e.get("name"))) for e in events
              if e.get("type") == "scenario" and isinstance(e.get("t"), (int, float))]
    if not starts:
        return []
    last = max([end for _, _, end in phases] + [t for t, _ in starts])
    spans = []
    for i, (t, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else last
        spans.append((name, t, max(t, end)))
    return spans


def _phase_spans(events, rows):
    """``[(phase, start t, end t)]`` from the phase events; from the streams' phase tags otherwise."""
    spans, open_ = [], {}
    for e in events:
        if e.get("type") != "phase" or not isinstance(e.get("t"), (int, float)):
            continue
        phase = e.get("phase") or (e.get("plan") or {}).get("name") or "?"
        if e.get("name") == "start":
            if phase in open_:
                spans.append((phase, open_.pop(phase), e["t"]))
            open_[phase] = e["t"]
        elif e.get("name") == "end" and phase in open_:
            spans.append((phase, open_.pop(phase), e["t"]))
    last = max([r["t"] + 1 for r in rows] + [e["t"] for e in events if isinstance(e.get("t"), (int, float))],
               default=None)
    for phase, start in open_.items():  # a phase whose end was never written (killed master)
        spans.append((phase, start, max(start, last or start)))
    if not spans and rows:
        current, start = None, None
        for r in rows:
            if r.get("phase") != current:
                if current is not None:
                    spans.append((current, start, r["t"]))
                current, start = r.get("phase"), r["t"]
        spans.append((current, start, rows[-1]["t"] + 1))
    return sorted(spans, key=lambda s: s[1])


def _new_figure(Figure, height_in=None):
    fig = Figure(figsize=(FIG_SIZE_IN[0], height_in or FIG_SIZE_IN[1]), dpi=FIG_DPI)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def _title(fig, text):
    fig.text(TIMELINE_MARGINS["left"], 0.98, text, ha="left", va="top", fontsize=11)


def _png(fig, timeline=True, top_in=None):
    """PNG bytes. Timelines get fixed margins (in inches at the top), so their time axes line up down the page."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    if timeline:
        height = fig.get_figheight()
        fig.subplots_adjust(**TIMELINE_MARGINS, top=1 - (top_in or TIMELINE_TOP_IN) / height,
                            bottom=TIMELINE_BOTTOM_IN / height)
    else:
        fig.tight_layout()
    _fit_legends(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI)
    return buf.getvalue()


def _legend(ax, handles=None, labels=None, **kw):
    """A legend beside the plot (``_LEGEND``, overridable by ``kw``) with long labels wrapped onto lines."""
    import textwrap

    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    labels = ["\n".join(textwrap.wrap(str(lb), LEGEND_LABEL_CHARS, break_long_words=True)) or str(lb)
              for lb in labels]
    return ax.legend(handles, labels, **{**_LEGEND, **kw})


def legend_overflow(fig):
    """``[(legend's text, how many pixels it reaches past the figure's box)]`` of every legend that does
    not fit inside the figure — [] when all fit (what the tests assert of every chart)."""
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    out = []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        ext = leg.get_window_extent(renderer)
        past = max(box.x0 - ext.x0, ext.x1 - box.x1, box.y0 - ext.y0, ext.y1 - box.y1)
        if past > 0.5:
            out.append((" / ".join(t.get_text() for t in leg.get_texts()), past))
    return out


def _fit_legends(fig):
    """Shrink a legend that reaches past the figure's box, and if it still does, move it inside the plot:
    no legend is cut (issue #27: "threshold exceeded (repor")."""
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        size = leg.get_texts()[0].get_fontsize() if leg.get_texts() else _LEGEND["fontsize"]
        while legend_overflow(fig) and size > LEGEND_MIN_FONT:
            size -= 0.5
            for t in leg.get_texts():
                t.set_fontsize(size)
        if legend_overflow(fig):
            leg.set_bbox_to_anchor(None)
            leg.set_loc("best")


def _plain_axis(axis):
    """Tick labels in plain notation with thousands separators (``23,660``, never ``2.366e+04``)."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_number(v)))


def _plain_log_axis(axis):
    """A log axis labelled in plain numbers (``10``, ``60``, ``1,000``), never ``10^3`` or ``6×10^1``;
    matplotlib's own log formatter still decides which ticks get a label."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def __call__(self, x, pos=None):
            return fmt_number(x) if super().__call__(x, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _no_data(ax, text="no per-second samples were recorded (the run ended before its first second was written)"):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="#6b7485",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _throughput_chart(Figure, tl):
    fig, ax = _new_figure(Figure, FIG_SIZE_IN[1] + LABELLED_TOP_IN - TIMELINE_TOP_IN)
    if not tl.rows:
        _no_data(ax)
    else:
        tl.decorate(ax, label_phases=True)
        whole = lambda r: not r.get("partial")  # noqa: E731 - a phase's last, partial second would read as a collapse
        x, ok = tl.series(lambda r: r["throughput"] - r["failed"] if whole(r) else None)
        ax.plot(x, ok, color="#1f6feb", lw=1.6, label="succeeded / s")
        x, asked = tl.series(lambda r: r["target_rate"] if whole(r) else None)
        if asked:  # the open model's target: what was asked, beside what was done
            ax.plot(x, asked, color="#57606a", lw=1.2, ls="--", label="target arrivals / s")
        x, bad = tl.series(lambda r: r["failed"] if whole(r) else None)
        ax.bar(x, bad, width=0.8, color="#d1242f", alpha=0.75, label="failed / s")
        # Dropped arrivals and breaker rejections on their own axis: thousands of fast rejections a second
        # would flatten the completed operations near zero.
        other = None
        for key, colour in (("dropped", "#9a6700"), ("rejected", "#8c959f")):
            x, y = tl.series(lambda r, k=key: (r[k] or None) if whole(r) else None)
            if y:
                other = other or ax.twinx()
                other.bar(x, y, width=0.5, color=colour, alpha=0.5, label=f"{key} / s (right)")
        if other is not None:
            other.set_ylim(bottom=0)
            other.tick_params(axis="y", labelsize=7, colors="#57606a")
        crashes = [e for e in tl.events if e.get("type") == "worker_crash" and isinstance(e.get("t"), (int, float))]
        if crashes:
            ax.plot([tl.rel(e["t"]) for e in crashes], [0] * len(crashes), "v", color="#8250df", ms=8,
                    label="worker crash", clip_on=False)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("operations / s")
        _plain_axis(ax.yaxis)
        handles, labels = ax.get_legend_handles_labels()
        legend = {}
        if other is not None:  # past the right axis' tick labels
            _plain_axis(other.yaxis)
            h2, l2 = other.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
            legend = {"bbox_to_anchor": (1.075, 1.0), "fontsize": 7}
        _legend(ax, handles, labels, **legend)
    _title(fig, "Throughput and errors")
    return ("Throughput and errors over time",
            "Completed operations per second (succeeded line, failed bars; dropped and breaker-rejected calls, "
            "when any, on the right axis; an open-model run's target rate dashed); phases shaded, worker "
            "crashes marked; each phase's last, partial second is left out.",
            _png(fig, top_in=LABELLED_TOP_IN if tl.rows else None))


def _latency_chart(Figure, tl):
    fig, ax = _new_figure(Figure)
    if not any(r["latency"] for r in tl.rows):
        _no_data(ax, "no latency was recorded")
    else:
        tl.decorate(ax)
        open_model = any(r["response"] for r in tl.rows)
        for key, colour in (("p50", "#1f6feb"), ("p90", "#2da44e"), ("p99", "#bf8700"), ("max", "#d1242f")):
            x, y = tl.series(lambda r, k=key: r["latency"].get(k))
            if y:
                ax.plot(x, y, lw=1.4, color=colour, label=f"service {key}" if open_model else key,
                        marker="." if len(y) < 30 else None)
        for key, colour in (("p50", "#1f6feb"), ("p99", "#bf8700")):  # open model: from the intended start
            x, y = tl.series(lambda r, k=key: r["response"].get(k))
            if y:
                ax.plot(x, y, lw=1.2, ls="--", color=colour, label=f"response {key}")
        values = [v for r in tl.rows for d in (r["latency"], r["response"]) for v in d.values() if v and v > 0]
        if values and max(values) / max(min(values), 1e-9) > 50:
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
        ax.set_ylabel("latency (ms)")
        _legend(ax)
    _title(fig, "Latency percentiles")
    return ("Latency percentiles over time", "Per-second p50, p90, p99 and max of operation latency (ms); in an "
            "open-model run also the response time (dashed: from each arrival's intended start, so a stall that "
            "delays starts shows, which service time hides).", _png(fig))


def _op_latency_chart(Figure, tl, report):
    """Each op of a mix: its p99 per second (solid) and p50 (dotted), one colour per op — which endpoint
    slowed and when. None without per-op seconds (not a mix, or a report written before them)."""
    names = {op for r in tl.rows for op in r["ops"]}
    if not names:
        return None
    counts = {}
    for d in report.get("detailed_metrics") or []:
        for op, o in (d.get("ops") or {}).items() if isinstance(d.get("ops"), dict) else ():
            if isinstance(o, dict):
                counts[str(op)] = counts.get(str(op), 0) + (_num(o.get("operations"), 0))
    shown = sorted(names, key=lambda op: (-counts.get(op, 0), op))[:MAX_OP_LINES]
    fig, ax = _new_figure(Figure)
    tl.decorate(ax)
    colours = ("#1f6feb", "#bf8700", "#2da44e", "#d1242f", "#8250df", "#57606a", "#bc4c00", "#0a7ea4")
    for i, op in enumerate(shown):
        colour = colours[i % len(colours)]
        x, y = tl.series(lambda r, o=op: r["ops"].get(o, {}).get("p99"))
        ax.plot(x, y, lw=1.4, color=colour, label=f"{op} p99", marker="." if len(y) < 30 else None)
        x, y = tl.series(lambda r, o=op: r["ops"].get(o, {}).get("p50"))
        ax.plot(x, y, lw=1.0, ls=":", color=colour, label=f"{op} p50")
    values = [v for r in tl.rows for d in r["ops"].values() for v in d.values() if v and v > 0]
    if values and max(values) / max(min(values), 1e-9) > 50:
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
    ax.set_ylabel("latency (ms)")
    _legend(ax)
    _title(fig, "Latency per op of the mix")
    more = len(names) - len(shown)
    return ("Latency per op of the mix over time",
            "Per-second p99 (solid) and p50 (dotted) of each op of the weighted mix (ms)"
            + (f"; the {len(shown)} most frequent of {len(names)} ops shown" if more > 0 else "") + ".", _png(fig))


def _breaches(tl, metrics=None):
    return [e for e in tl.events if e.get("type") == "breach" and isinstance(e.get("detected_at", e.get("t")), (int, float))
            and (metrics is None or e.get("metric") in metrics)]


def _mark_breaches(ax, tl, own_metrics):
    """The breaches and exceeded thresholds of the chart's own metrics (``own_metrics``), each a line at
    its detection time with its value: a CPU threshold is marked on the CPU chart, never on memory."""
    for i, b in enumerate(_breaches(tl, own_metrics)):
        x = tl.rel(b.get("detected_at", b.get("t")))
        ax.axvline(x, color="#d1242f", ls="--", lw=1.2, label="breach" if i == 0 else None)
        if isinstance(b.get("value"), (int, float)):
            ax.plot([x], [b["value"]], "X", color="#d1242f", ms=9)
            ax.annotate(f"{b.get('metric')} {b['value']:.0f} > {fmt_number(b.get('limit'))}", (x, b["value"]),
                        textcoords="offset points", xytext=(-6, 6), ha="right", fontsize=8, color="#d1242f",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
        if isinstance(b.get("pool_dead_at"), (int, float)):
            ax.axvline(tl.rel(b["pool_dead_at"]), color="#d1242f", ls=":", lw=1.0)
    exceeded = [e for e in tl.events if e.get("type") == "threshold_exceeded" and isinstance(e.get("t"), (int, float))
                and e.get("metric") in own_metrics]
    for i, e in enumerate(exceeded):  # reported, not killed: an orange mark where the limit was passed
        x = tl.rel(e["t"])
        ax.axvline(x, color="#bc4c00", ls="-.", lw=1.0, label="threshold exceeded (reported)" if i == 0 else None)
        if isinstance(e.get("value"), (int, float)):
            ax.plot([x], [e["value"]], "^", color="#bc4c00", ms=8)


def _cpu_chart(Figure, tl, report):
    th = report.get("thresholds") or {}
    fig, ax = _new_figure(Figure)
    x, y = tl.series(lambda r: r["cpu"])
    if not y:
        _no_data(ax, "no CPU samples were recorded")
    else:
        tl.decorate(ax)
        ax.plot(x, y, color="#1f6feb", lw=1.5, label="machine CPU")
        limit = th.get("max_cpu_percent")
        if isinstance(limit, (int, float)):
            ax.axhline(limit, color="#bf8700", ls="--", lw=1.2,
                       label=f"limit {limit:g} %" + (" (off)" if limit >= 100 else ""))
        _mark_breaches(ax, tl, {"cpu_percent"})
        ax.set_ylim(0, 105)
        ax.set_ylabel("CPU %")
        _legend(ax)
    _title(fig, "Machine CPU")
    return ("Machine CPU over time", "Machine CPU (mean of the second's samples), the CPU threshold (dashed) and breaches "
            "(red: detected, dotted: pool dead).", _png(fig))


def _memory_chart(Figure, tl, report):
    th = report.get("thresholds") or {}
    fig, ax = _new_figure(Figure)
    x, y = tl.series(lambda r: r["memory"])
    if not y:
        _no_data(ax, "no memory samples were recorded")
    else:
        tl.decorate(ax)
        ax.plot(x, y, color="#2da44e", lw=1.5, label="pool PSS")
        xr, yr = tl.series(lambda r: r["rss"])
        if yr:
            ax.plot(xr, yr, color="#8c959f", lw=1.0, ls="-.", label="pool RSS")
        limit = th.get("max_memory_mb")
        top = max(y + (yr or [0]))
        if isinstance(limit, (int, float)) and limit <= 3 * top:
            ax.axhline(limit, color="#bf8700", ls="--", lw=1.2, label=f"limit {fmt_number(limit)} MB")
        elif isinstance(limit, (int, float)):  # drawing it would flatten the use into a line at the bottom
            ax.plot([], [], color="#bf8700", ls="--", lw=1.2, label=f"limit {fmt_number(limit)} MB (above)")
        _mark_breaches(ax, tl, MEMORY_METRICS)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("MB")
        _plain_axis(ax.yaxis)
        _legend(ax)
    _title(fig, "Pool memory")
    return ("Pool memory over time", "Peak PSS and RSS of the worker pool per second, the memory threshold (dashed; "
            "named only when it is more than 3× the peak, so the use stays readable) and breaches.", _png(fig))


# The percentiles of the latency distribution chart: 0 to 99.999 on a "nines" axis (x = 1 / (1 − p)).
_DISTRIBUTION_PERCENTILES = tuple(100 * (1 - 10 ** (-k / 8)) for k in range(0, 41))
MAX_DISTRIBUTION_LINES = 12


def _distribution_chart(Figure, report):
    """The latency distribution of each component from its merged HDR histogram, as HdrHistogram plots
    it: latency against percentile on a log "nines" axis (50 %, 90 %, 99 %, 99.9 % … equally spaced),
    where the tail is as visible as the median. None without histograms."""
    from ..analysis.stats import Histogram

    lines = []
    for d in report.get("detailed_metrics") or []:
        payload = (d.get("histograms") or {}).get("latency")
        if not payload or not isinstance(payload, str):
            continue
        try:
            h = Histogram.from_payload(payload)
        except Exception:  # noqa: BLE001 - a damaged payload loses its line, not the page
            continue
        if h.count:
            lines.append((str(d.get("test_name")), h))
    if not lines:
        return None
    fig, ax = _new_figure(Figure)
    for name, h in lines[:MAX_DISTRIBUTION_LINES]:
        ps = [p for p in _DISTRIBUTION_PERCENTILES if h.count * (1 - p / 100) >= 0.5] or [0.0]
        ax.plot([1 / (1 - p / 100) for p in ps], [h.value_at(p) / 1000 for p in ps], lw=1.4,
                label=f"{name} (n={fmt_number(h.count)})")
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1_000, 10_000, 100_000]
    ax.set_xticks(ticks, ["0 %", "50 %", "90 %", "99 %", "99.9 %", "99.99 %", "99.999 %"])
    ax.set_xlim(1, max(2.0, max(1 / (1 - p / 100) for p in _DISTRIBUTION_PERCENTILES
                                 if any(h.count * (1 - p / 100) >= 0.5 for _, h in lines))))
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency, ms")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    ax.set_title("Latency distribution", fontsize=11, loc="left")
    return ("Latency distribution", "Latency at each percentile from each component's merged HDR histogram (every "
            "operation, all workers), on a log axis of nines so the tail reads as well as the median; a line "
            "stops where fewer than one operation in two lies beyond.", _png(fig, timeline=False))


def _capacity_chart(Figure, d):
    """A capacity search: above, the throughput at each step with the USL fit; below, what the verdict
    judges — each step's mean latency ÷ the mean at concurrency 1, with its 95 % interval — against the
    SLO line; the capacity and its interval on both."""
    pm = d.get("performance_metrics") or {}
    steps = [s for s in pm.get("capacity_steps") or [] if isinstance(s, dict)
             and isinstance(s.get("concurrency"), (int, float)) and isinstance(s.get("throughput"), (int, float))]
    if not steps:
        return None
    steps.sort(key=lambda s: s["concurrency"])
    fig = Figure(figsize=(FIG_SIZE_IN[0], 2 * FIG_SIZE_IN[1]), dpi=FIG_DPI)
    ax, ax2 = fig.subplots(2, 1, sharex=True)
    n = [s["concurrency"] for s in steps]
    ax.plot(n, [s["throughput"] for s in steps], "o-", color="#1f6feb", lw=1.5, label="measured throughput")
    usl = pm.get("usl") or {}
    if all(isinstance(usl.get(k), (int, float)) for k in ("sigma", "kappa", "lambda")):
        top = max(n + [usl.get("peak_concurrency") or 0]) * 1.15
        grid = [1 + i * (top - 1) / 200 for i in range(201)]
        ax.plot(grid, [_usl(g, usl) for g in grid], color="#8250df", lw=1.2, ls="--",
                label=f"USL fit σ={usl['sigma']:.3g} κ={usl['kappa']:.3g} λ={usl['lambda']:.3g}")
        if isinstance(usl.get("peak_concurrency"), (int, float)):
            ax.axvline(usl["peak_concurrency"], color="#8250df", ls=":", lw=1.0,
                       label=f"model peak N={usl['peak_concurrency']:.1f}")
    # What the verdict uses: the mean latency ratio with its 95 % interval, against the SLO.
    ratio = [s for s in steps if _num(s.get("latency_ratio")) is not None and math.isfinite(s["latency_ratio"])]
    if ratio:
        err = [1.96 * _num(s.get("ratio_se"), 0.0) if math.isfinite(_num(s.get("ratio_se"), 0.0)) else 0.0
               for s in ratio]
        good = [s.get("ok") is not False for s in ratio]
        ax2.errorbar([s["concurrency"] for s in ratio], [s["latency_ratio"] for s in ratio], yerr=err, fmt="-",
                     color="#bf8700", lw=1.2, capsize=3, label="mean latency ÷ mean at 1 (95 % interval)")
        for ok, marker, label in ((True, "o", "step within the SLO"), (False, "X", "step past the SLO")):
            pts = [s for s, g in zip(ratio, good) if g is ok]
            if pts:
                ax2.plot([s["concurrency"] for s in pts], [s["latency_ratio"] for s in pts], marker, ls="none",
                         color="#2da44e" if ok else "#d1242f", ms=6, label=label)
    slo = _capacity_slo(pm)
    ax2.axhline(slo, color="#d1242f", ls="--", lw=1.2, label=f"SLO: mean ≤ {slo:g} × the mean at 1")
    cap, low, high = (_num(pm.get(k)) for k in ("max_capacity", "capacity_low", "capacity_high"))
    for i, a in enumerate((ax, ax2)):
        if low is not None and high is not None and high >= low:
            a.axvspan(low, high, color="#2da44e", alpha=0.12, lw=0,
                      label=f"capacity interval {fmt_number(low)}–{fmt_number(high)}" if i else None)
        if cap is not None:
            a.axvline(cap, color="#2da44e", ls="-", lw=1.4, label=f"capacity {fmt_number(cap)}" if i else None)
    ax.set_ylabel("operations / s")
    ax.set_ylim(bottom=0)
    _plain_axis(ax.yaxis)
    ax2.set_ylabel("latency ratio")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("concurrency")
    for a in (ax, ax2):
        a.grid(True, alpha=0.3)
        _legend(a)
    ax.set_title(f"Capacity — {d.get('test_name')}", fontsize=11, loc="left")
    interval = pm.get("capacity_interval") or (fmt_number(cap) if cap is not None else "—")
    return (f"Capacity curve of {d.get('test_name')}",
            f"Capacity {interval}. Above: throughput at each concurrency step, the Universal Scalability Law fit "
            "and its peak. Below: what the capacity verdict judges — each step's mean latency ÷ the mean at "
            "concurrency 1, with its 95 % interval — against the SLO line; the capacity where the ratio crosses "
            "it, its 95 % interval shaded.",
            _png(fig, timeline=False))


def _capacity_slo(pm):
    """The SLO factor the search judged against: its report's ``slo_mean_ms ÷ reference_mean_ms``, else the
    scenario's own constant."""
    slo, ref = _num(pm.get("slo_mean_ms")), _num(pm.get("reference_mean_ms"))
    if slo and ref:
        return round(slo / ref, 3)
    from ..scenarios.capacity_limits import SLO_FACTOR

    return SLO_FACTOR


def _usl(n, usl):
    """Universal Scalability Law: X(N) = λN / (1 + σ(N−1) + κN(N−1))."""
    return usl["lambda"] * n / (1 + usl["sigma"] * (n - 1) + usl["kappa"] * n * (n - 1))


def _breaker_state(e):
    state = str(e.get("state") or e.get("to") or "").rsplit(".", 1)[-1].lower().replace("-", "_").replace(" ", "_")
    return state if state in BREAKER_LEVELS else None


def _breaker_name(e):
    """Which breaker: a named one, else the worker whose dispatcher holds it — with its shard in a fleet,
    where every shard has a worker 0."""
    shard = f"shard {e['shard']} " if e.get("shard") is not None else ""
    for key in ("breaker", "stage", "name"):
        if e.get(key) is not None:
            return shard + str(e[key])
    return shard + (f"worker {e['worker']}" if e.get("worker") is not None else "breaker")


def _breaker_chart(Figure, tl, events):
    changes = [e for e in events if e.get("type") == "breaker" and isinstance(e.get("t"), (int, float))
               and _breaker_state(e)]
    if not changes:
        return None
    by_name = {}
    for e in changes:
        name = _breaker_name(e)
        by_name.setdefault(name, []).append(e)
    fig, ax = _new_figure(Figure)
    tl.decorate(ax)
    end = max([tl.rel(e["t"]) for e in changes] + tl.x) + 1
    for i, (name, evs) in enumerate(sorted(by_name.items())):
        xs = [tl.rel(e["t"]) for e in evs] + [end]
        ys = [BREAKER_LEVELS[_breaker_state(e)] + i * 0.06 for e in evs]
        before = _breaker_state({"state": evs[0].get("previous")})
        if before and tl.phases:  # the state it left, from the start of the run
            xs.insert(0, min(tl.rel(tl.phases[0][1]), xs[0]))
            ys.insert(0, BREAKER_LEVELS[before] + i * 0.06)
        ys.append(ys[-1])
        ax.step(xs, ys, where="post", lw=1.5, label=name)
    ax.set_yticks(list(BREAKER_LEVELS.values()), [k.replace("_", "-") for k in BREAKER_LEVELS], fontsize=8)
    ax.set_ylim(-0.3, 2.6)
    _legend(ax)
    _title(fig, "Circuit breakers")
    return ("Breaker state over time", "State of each circuit breaker (CLOSED, HALF_OPEN, OPEN) from its transitions.",
            _png(fig))


def _measures_chart(Figure, d, xmax=None):
    stages = {k: v for k, v in measures_of(d).items() if isinstance(v, dict) and v.get("p50") is not None}
    if not stages:
        return None
    fig, ax = _new_figure(Figure)
    names = list(stages)
    height = 0.26
    for j, (key, colour) in enumerate((("p50", "#1f6feb"), ("p90", "#2da44e"), ("p99", "#bf8700"))):
        ys = [i + (j - 1) * height for i in range(len(names))]
        ax.barh(ys, [stages[n].get(key) or 0 for n in names], height=height, color=colour, label=key)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()  # the pipeline reads top to bottom
    ax.set_xlabel("latency (ms)")
    if xmax:
        ax.set_xlim(0, xmax)
    ax.grid(True, axis="x", alpha=0.3)
    _legend(ax)
    ax.set_title(f"Named measurements — {d.get('test_name')}", fontsize=11, loc="left")
    return (f"Named measurements of {d.get('test_name')}", "p50, p90 and p99 of each loadgen.measure block — the "
            "embedded flow's stages, in pipeline order — (ms), on one scale for every component.",
            _png(fig, timeline=False))


def _num(v, default=None):
    """``v`` if it is a number (not a bool), else ``default``."""
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else default
