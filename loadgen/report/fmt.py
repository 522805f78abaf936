"""Number formatting shared by ``report.html``'s page (html.py) and its charts (charts.py); the
text clean-up shared by ``report.html`` and ``junit.xml`` (junit.py)."""

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
