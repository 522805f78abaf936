"""Reports of a run directory: one role per file.

* ``build.py`` — the report dict (``report.json``'s content) and its recommendations.
* ``text.py`` — ``summary.txt``: the human summary.
* ``html.py`` — ``report.html``: the self-contained page (sections, tables, escaping).
* ``charts.py`` — the page's matplotlib charts, as PNG bytes.
* ``fmt.py`` — number formatting shared by the page and its charts.
* ``fleet.py`` — a fleet run's per-machine table in text, HTML and JUnit.
* ``junit.py`` — ``junit.xml``: criteria as JUnit test cases.
* ``prom.py`` — ``--prom-textfile``: key gauges for node_exporter.
* ``compare.py`` — ``loadgen compare``: regressions between two reports.
* ``rebuild.py`` — ``loadgen report``: rebuild a run's reports from its streams.
* ``__init__.py`` — the file names and :func:`write_reports`, which writes them all.

Suite runs use the seed's file names
(``ai_writing_flow_v2_heavy_load_stress_report.json``/``.txt``).
"""

from __future__ import annotations

import json
import logging
import os

from ..streams import atomic_write, json_safe
from .build import SCHEMA_VERSION, SUITE_BASENAME, SUITE_NAME, build_report, recommendations, system_info
from .html import write_html
from .junit import write_junit
from .text import render_summary

__all__ = ["SCHEMA_VERSION", "SUITE_BASENAME", "SUITE_NAME", "build_report", "recommendations", "render_summary",
           "report_paths", "system_info", "write_reports"]

log = logging.getLogger("loadgen.report")

def report_paths(run_dir, kind):
    """``{"json": path, "txt": path}`` of a run's report files (suite: the seed's names)."""
    base = SUITE_BASENAME if kind == "suite" else "report"
    return {"json": os.path.join(run_dir, base + ".json"), "txt": os.path.join(run_dir, base + ".txt"
                                                                               if kind == "suite" else "summary.txt")}


def write_reports(run_dir, report):
    """Write every report of a run directory atomically; returns {format: path}.

    report.json and summary.txt (suite: the seed's names), then report.html and
    junit.xml. A failure while writing an optional format is logged (logger
    ``loadgen.report``) and leaves it out of the result; it never loses the JSON.
    """
    paths = report_paths(run_dir, report["metadata"]["kind"])
    report = json_safe(json.loads(json.dumps(report, default=_default)))
    atomic_write(paths["json"], json.dumps(report, indent=2, allow_nan=False) + "\n")
    atomic_write(paths["txt"], render_summary(report))
    for fmt, write in (("html", write_html), ("junit", write_junit)):  # write(run_dir, report) -> path
        try:
            paths[fmt] = write(run_dir, report)
        except Exception as e:  # noqa: BLE001 - the JSON report is already safe
            log.error("could not write %s: %s: %s", fmt, type(e).__name__, e)
    return paths


def _default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)
