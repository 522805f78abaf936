"""Number formatting shared by ``report.html``'s page (html.py) and its charts (charts.py); the
text clean-up shared by ``report.html`` and ``junit.xml`` (junit.py); the named measurements' and
checks' tables shared by ``summary.txt`` and ``report.html``."""

from __future__ import annotations

import math
import re

# What XML 1.0 forbids even escaped, and what HTML parses as an error: C0 controls but tab, LF and
# CR; DEL and the C1 controls; lone surrogates (a JSON "\ud800" decodes to one); the noncharacters
# U+FDD0–U+FDEF and U+nFFFE/U+nFFFF of every plane.
_UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
                          + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(1, 17)) + "]")


def clean_text(text):
    """``text`` (str() of anything) with every character XML 1.0 or HTML cannot carry replaced by U+FFFD:
    the writers of ``junit.xml`` and ``report.html`` pass everything they write through it, names too."""
    return _UNSAFE_TEXT.sub("\ufffd", str(text))


SIGNIFICANT_DIGITS = 4
SMALLEST_SHOWN = 1e-4  # below it (not zero) a number shows as "< 0.0001"


# What a terminal or a text file must never get raw from a name, a label or a message: C0 controls (a
# newline forges a line, ESC drives the terminal), DEL and C1, the bidirectional overrides and isolates
# (U+202A–U+202E, U+2066–U+2069, the marks U+200E/U+200F/U+061C: they reorder what is shown), the
# line and paragraph separators and lone surrogates. Shown as escapes (``\x1b``, ``\n``, ``\u202e``),
# as ``repr`` does, so what the name really holds stays readable.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match):
    ch = match.group()
    return _SHORT_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text):
    """``text`` (str() of anything) on one line and inert on a terminal: control characters, ESC,
    newlines and bidi overrides escaped (``\x1b``, ``\n``, ``\u202e``). For the console and
    ``summary.txt``, as :func:`clean_text` is for ``junit.xml`` and ``report.html``."""
    return _UNPRINTABLE.sub(_escape, str(text))


def printable_tree(obj, keep=("tracebacks",)):
    """A copy of ``obj`` (a report dict) with every string, keys too, through :func:`printable`; the
    values under the keys of ``keep`` (multi-line texts the writer splits itself) are left as they are."""
    if isinstance(obj, str):
        return printable(obj)
    if isinstance(obj, dict):
        return {printable(k) if isinstance(k, str) else k: v if k in keep else printable_tree(v, keep)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_tree(v, keep) for v in obj]
    return obj


def fmt_number(v):
    """``v`` as short text (str) in plain notation, never ``2.366e+04``: whole numbers from 1,000 up
    with thousands separators (``23,660``), smaller ones to 4 significant digits (``0.8125``,
    ``12.5``); "—" for None; bools, inf, nan and non-numbers as ``str(v)``."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return str(f)
    if abs(f) >= 1000 or f == int(f):
        return f"{f:,.0f}"
    if abs(f) < SMALLEST_SHOWN:
        return "< 0.0001" if f > 0 else "> -0.0001"
    decimals = SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(f)))
    text = f"{f:.{max(0, decimals)}f}"
    if abs(float(text)) >= 1000:  # 999.96 rounds up to a whole thousand
        return f"{float(text):,.0f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


MEASURE_HEAD = ["component", "measurement", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"]
CHECK_HEAD = ["component", "check", "passes", "fails", "pass rate"]


def measures_of(d):
    """A component's named measurements, ``{name: summary}`` (``stage_latency_ms`` in a report written
    before them; {} when neither is a table)."""
    named = d.get("measures_ms") or d.get("stage_latency_ms")
    return named if isinstance(named, dict) else {}


def named_tables(report):
    """``(measurement rows, check rows)`` of every component's ``loadgen.measure`` and ``loadgen.check``
    names (heads :data:`MEASURE_HEAD`, :data:`CHECK_HEAD`; numbers as text), for ``summary.txt`` and
    ``report.html``. A report written before these existed falls back to its ``stage_latency_ms``."""
    measures, checks = [], []
    for d in report.get("detailed_metrics") or []:
        name = d.get("test_name")
        for m, s in measures_of(d).items():
            if isinstance(s, dict):
                measures.append([name, m, fmt_number(s.get("count"))]
                                + [fmt_number(s.get(k)) for k in ("p50", "p95", "p99", "max")])
        for c, s in ((d.get("checks") or {}).items() if isinstance(d.get("checks"), dict) else ()):
            if isinstance(s, dict):
                rate = s.get("rate")
                checks.append([name, c, fmt_number(s.get("passes")), fmt_number(s.get("fails")),
                               "—" if not isinstance(rate, (int, float)) else f"{rate * 100:.2f} %"])
    return measures, checks


OP_HEAD = ["component", "op", "weight", "ops", "share", "success", "ops/s", "p50 ms", "p95 ms", "p99 ms",
           "most frequent error"]


def op_table(report):
    """The rows (head :data:`OP_HEAD`) of every component's mix of operations: one per op."""
    rows = []
    for d in report.get("detailed_metrics") or []:
        ops = d.get("ops")
        if not isinstance(ops, dict) or not ops:
            continue
        total = sum(o.get("operations") or 0 for o in ops.values() if isinstance(o, dict))
        for name, o in ops.items():
            if not isinstance(o, dict):
                continue
            lat = o.get("latency_ms") if isinstance(o.get("latency_ms"), dict) else {}
            rate, n = o.get("success_rate"), o.get("operations") or 0
            errors = o.get("errors") if isinstance(o.get("errors"), dict) else {}
            top = next(iter(errors.items()), None)
            rows.append([d.get("test_name"), name, fmt_number(o.get("weight")), str(n),
                         f"{n / total * 100:.1f} %" if total else "—",
                         "—" if not isinstance(rate, (int, float)) else f"{rate * 100:.1f} %",
                         fmt_number(o.get("throughput"))] + [fmt_number(lat.get(k)) for k in ("p50", "p95", "p99")]
                        + [f"{top[0]} ×{top[1]}" if top else ""])
    return rows
