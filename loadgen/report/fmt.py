"""Number formatting shared by ``report.html``'s page (html.py) and its charts (charts.py)."""

from __future__ import annotations

import math


def fmt_number(v):
    """``v`` as short text (str): 4 significant digits, whole numbers from 1e5 up; "—" for None;
    bools, inf, nan and non-numbers as ``str(v)``."""
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
    return f"{f:.4g}" if abs(f) < 1e5 else f"{f:.0f}"
