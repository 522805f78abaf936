"""``junit.xml``: a run's criteria as JUnit test cases, for CI dashboards.

One ``<testsuite>`` per component (scenario) inside one ``<testsuites>``.
Each criterion is a ``<testcase>`` whose ``<failure>`` message carries the
measured value and the limit; one more case per component, ``run``, says
how the run itself ended: a stop by an unexpected safety breach, a signal
or a usage error is an ``<error>``, another non-zero stop (restart limit,
master killed) a ``<failure>``.

Every name, message, property and text is cleaned of the characters XML 1.0
cannot carry (control characters, lone surrogates, noncharacters: replaced by
U+FFFD), so the document is well-formed whatever the report holds.

The document follows the Ant/Jenkins JUnit shape that Jenkins' ``junit``
step and GitLab's ``artifacts:reports:junit`` both read: every
``testsuite`` carries ``name tests failures errors skipped time timestamp
hostname id package``, its children come in the order ``properties``,
``testcase``\\*, ``system-out``, ``system-err``; timestamps are ISO 8601
without a zone (UTC). ``tests/data/junit.xsd`` checks that shape.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import socket
import xml.etree.ElementTree as ET

from ..errors import ExitCode
from ..streams import atomic_write
from .fleet import fleet_junit_suite
from .fmt import clean_text

JUNIT_FILE = "junit.xml"

# Exit codes (DESIGN §10) that are errors of the run rather than failed criteria.
_ERROR_TYPES = {ExitCode.USAGE: "UsageError", ExitCode.BREACH: "ThresholdBreached", ExitCode.SIGINT: "Interrupted",
                ExitCode.SIGTERM: "Terminated", ExitCode.SIGHUP: "Terminated", ExitCode.SIGUSR1: "Terminated",
                ExitCode.SIGUSR2: "Terminated", ExitCode.SIGALRM: "Terminated"}


def write_junit(run_dir, report):
    """Write ``RUN_DIR/junit.xml`` atomically; returns its path."""
    path = os.path.join(run_dir, JUNIT_FILE)
    atomic_write(path, render_junit(report))
    return path


def render_junit(report):
    """The JUnit XML document (str, UTF-8 declaration included) of a report dict."""
    md = report.get("metadata") or {}
    kind = str(md.get("kind") or "run")
    stamp = _timestamp(md.get("started_at"))
    host = _clean(socket.gethostname()) or "localhost"
    root = ET.Element("testsuites", name=f"loadgen {kind}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "time": 0.0}
    components = report.get("detailed_metrics") or []
    if not components:  # a run that ended before any component finished
        components = [{"test_name": kind, "duration_seconds": md.get("duration_seconds") or 0.0,
                       "criteria": [], "exit_code": report.get("exit_code", 1),
                       "stop_reason": "no component finished", "success": False, "_empty": True}]
    for i, comp in enumerate(components):
        suite = _suite(comp, kind, stamp, host, i, report)
        root.append(suite)
        for key in ("tests", "failures", "errors"):
            totals[key] += int(suite.get(key))
        totals["time"] += float(suite.get("time"))
    if report.get("fleet"):  # a fleet run (loadgen/fleet/): one case per shard, a lost shard is an error
        suite = fleet_junit_suite(report, stamp, host, len(components))
        root.append(suite)
        for key in ("tests", "failures", "errors"):
            totals[key] += int(suite.get(key))
    for key, value in totals.items():
        root.set(key, f"{value:.3f}" if key == "time" else str(value))
    _clean_tree(root)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(comp, kind, stamp, host, index, report):
    name = str(comp.get("test_name") or f"component{index}")
    classname = f"loadgen.{_ident(name)}"
    duration = float(comp.get("duration_seconds") or 0.0)
    suite = ET.Element("testsuite", name=classname, timestamp=stamp, hostname=host, id=str(index),
                       package=f"loadgen.{_ident(kind)}")
    props = ET.SubElement(suite, "properties")
    for key, value in _properties(comp, report):
        ET.SubElement(props, "property", name=key, value=_clean(value))
    cases = []
    for c in comp.get("criteria") or []:
        case = ET.Element("testcase", name=_clean(c.get("criterion") or c.get("metric") or "criterion"),
                          classname=classname, time="0")
        if not c.get("passed"):
            value = c.get("value")
            measured = "no value (the run did not produce this metric)" if value is None else f"{_num(value)}"
            msg = f"{c.get('criterion')}: measured {measured}, limit {c.get('metric')} {c.get('op')} {_num(c.get('limit'))}"
            fail = ET.SubElement(case, "failure", message=_clean(msg), type="CriterionFailed")
            fail.text = _clean(msg)
        cases.append(case)
    cases.append(_run_case(comp, classname, duration))
    for case in cases:
        suite.append(case)
    failures = sum(1 for c in cases if c.find("failure") is not None)
    errors = sum(1 for c in cases if c.find("error") is not None)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("skipped", "0")
    suite.set("time", f"{duration:.3f}")
    out = ET.SubElement(suite, "system-out")
    out.text = _clean(_stdout_text(comp))
    err = ET.SubElement(suite, "system-err")
    err.text = _clean("\n".join(str(m) for m in comp.get("error_messages") or []))
    return suite


def _run_case(comp, classname, duration):
    """The ``run`` case: how the component's run ended (breach, signal, crash, kill)."""
    case = ET.Element("testcase", name="run", classname=classname, time=f"{duration:.3f}")
    code = comp.get("exit_code", 0) or 0
    reason = str(comp.get("stop_reason") or "")
    breaches = comp.get("breaches") or []
    if code in _ERROR_TYPES:
        detail = reason or f"exit code {code}"
        if code == 3 and breaches:
            b = breaches[0]
            detail = (f"threshold breached: {b.get('metric')} = {_num(b.get('value'))} > limit "
                      f"{_num(b.get('limit'))}" + (f" ({reason})" if reason and "breach" not in reason else ""))
        el = ET.SubElement(case, "error", message=_clean(detail), type=_ERROR_TYPES[code])
        el.text = _clean(_breach_text(breaches) or detail)
    elif code or comp.get("_empty"):
        detail = reason or f"exit code {code}"
        el = ET.SubElement(case, "failure", message=_clean(f"run stopped: {detail}"), type="RunStopped")
        el.text = _clean(detail)
    return case


def _properties(comp, report):
    yield "kind", str((report.get("metadata") or {}).get("kind") or "")
    yield "exit_code", str(comp.get("exit_code", ""))
    if comp.get("stop_reason"):
        yield "stop_reason", str(comp["stop_reason"])
    acc = comp.get("accounting") or {}
    for key in ("dispatched", "succeeded", "failed", "timed_out", "crashed", "dropped", "lost"):
        if key in acc:
            yield f"accounting.{key}", str(acc[key])
    for key, value in (comp.get("latency_ms") or {}).items():
        if value is not None and key != "count":
            yield f"latency_ms.{key}", _num(value)
    if comp.get("throughput_ops_per_sec") is not None:
        yield "throughput_ops_per_sec", _num(comp["throughput_ops_per_sec"])
    measures = comp.get("measures_ms")
    for name, s in (measures.items() if isinstance(measures, dict) else ()):
        for key in ("count", "p50", "p95", "p99", "max"):
            if isinstance(s, dict) and s.get(key) is not None:
                yield f"measure.{name}.{key}" + ("" if key == "count" else "_ms"), _num(s[key])
    ops = comp.get("ops")
    for name, o in (ops.items() if isinstance(ops, dict) else ()):
        if isinstance(o, dict):
            lat = o.get("latency_ms") if isinstance(o.get("latency_ms"), dict) else {}
            for key, value in (("operations", o.get("operations")), ("success_rate", o.get("success_rate")),
                               ("p95_ms", lat.get("p95")), ("p99_ms", lat.get("p99"))):
                if value is not None:
                    yield f"op.{name}.{key}", _num(value)
    checks = comp.get("checks")
    for name, s in (checks.items() if isinstance(checks, dict) else ()):
        if isinstance(s, dict):
            yield f"check.{name}", f"{_num(s.get('passes'))} passed, {_num(s.get('fails'))} failed"
    if comp.get("peak_memory_mb") is not None:
        yield "peak_memory_mb", _num(comp["peak_memory_mb"])
    if (report.get("metadata") or {}).get("rebuilt_from_streams"):
        yield "rebuilt_from_streams", "true"


def _stdout_text(comp):
    lines = []
    acc = comp.get("accounting") or {}
    if acc:
        lines.append("accounting: " + ", ".join(f"{k} {v}" for k, v in acc.items()))
    lat = comp.get("latency_ms") or {}
    if lat.get("p50") is not None:
        lines.append(f"latency ms: p50 {_num(lat.get('p50'))}, p99 {_num(lat.get('p99'))}, max {_num(lat.get('max'))}")
    if comp.get("throughput_ops_per_sec") is not None:
        lines.append(f"throughput: {_num(comp['throughput_ops_per_sec'])} ops/s")
    for b in comp.get("breaches") or []:
        lines.append(_breach_text([b]))
    if comp.get("stop_reason"):
        lines.append(f"stop reason: {comp['stop_reason']}")
    return "\n".join(lines)


def _breach_text(breaches):
    return "\n".join(f"breach: {b.get('metric')} = {_num(b.get('value'))} > limit {_num(b.get('limit'))}"
                     for b in breaches)


def _timestamp(t):
    """ISO 8601 without zone or fraction (the Ant schema's pattern), UTC."""
    try:
        moment = _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        moment = _dt.datetime.now(_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def _num(v):
    if isinstance(v, bool) or v is None:
        return str(v)
    try:
        return f"{float(v):.6g}"
    except (TypeError, ValueError):
        return str(v)


def _ident(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)) or "_"


def _clean(text):
    return clean_text(text)


def _clean_tree(root):
    """Every attribute and text of the document through :func:`~loadgen.report.fmt.clean_text`: XML 1.0
    forbids most control characters even escaped, and names, messages, tracebacks and properties
    (the fleet's suite included) may carry them."""
    for el in root.iter():
        for key in list(el.attrib):
            el.set(key, clean_text(el.attrib[key]))
        if el.text is not None:
            el.text = clean_text(el.text)
        if el.tail is not None:
            el.tail = clean_text(el.tail)
