"""``summary.txt``: the human summary of a report dict, as plain text.

Pure: :func:`render_summary` returns the text; ``write_reports`` writes it.
A fleet run's per-machine table comes from :mod:`.fleet`.
"""

from __future__ import annotations

from ..result import NONE_SUCCEEDED, NOTHING_RAN
from .fleet import render_fleet_text
from .fmt import CHECK_HEAD, MEASURE_HEAD, OP_HEAD, named_tables, op_table, printable, printable_tree


TOP_ERRORS = 5  # error kinds listed per component, most frequent first


def top_errors(detail, n=TOP_ERRORS):
    """``[(error key, count, first message)]`` of a ``detailed_metrics`` entry, most frequent first: the
    message is the last line of the first traceback kept for the key (the exception and its text), or
    the key itself when none was kept."""
    errors = detail.get("errors") or {}
    tracebacks = detail.get("tracebacks") or {}
    out = []
    for key, count in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:n]:
        tbs = tracebacks.get(key) or []
        lines = [x for x in (tbs[0].splitlines() if tbs else []) if x.strip()]
        # The exception's own text: what follows the last frame (indented lines), which is one line
        # unless the class name or the message holds newlines. It is the target's text: escaped
        # (one line, no ESC, no bidi override), so that it cannot forge a line or drive the terminal.
        frames = [i for i, x in enumerate(lines) if x.startswith("  ")]
        message = "\n".join(lines[frames[-1] + 1:] if frames else lines[-1:]).strip()
        out.append((printable(key), count, printable(message or key)))
    return out


def error_lines(report, n=TOP_ERRORS, width=160):
    """One line per top error of every component: ``component: count × message`` (cut to ``width``)."""
    out = []
    for d in report.get("detailed_metrics") or []:
        for key, count, message in top_errors(d, n):
            line = f"{printable(d.get('test_name'))}: {count} × {message}"
            out.append(line if len(line) <= width else line[:width - 1] + "…")
    return out


DEFAULT_MARK = " (default)"  # after a criterion the user did not give: the scenario's own, judged for want of theirs


def criterion_text(c):
    """A criterion row's text, marked ``(default)`` when it is the scenario's own (``c["default"]``)."""
    return f"{c.get('criterion')}{DEFAULT_MARK if c.get('default') else ''}"


def failure_reasons(detail, fallback=None):
    """Why a component of a report failed, as short texts: each failed criterion with what it measured,
    the stop reason of a run stopped with a non-zero code, that nothing ran or none succeeded; ``[fallback or "failed"]``
    when the detail says none of these."""
    out = []
    for c in detail.get("criteria") or []:
        if not c.get("passed"):
            v = c.get("value")
            measured = f"{v:.4g}" if v is not None else f"no value: {c['why']}" if c.get("why") else "no value"
            out.append(f"{criterion_text(c)} failed (measured {measured})")
    if detail.get("stop_reason") and detail.get("exit_code"):
        out.append(f"stopped: {detail['stop_reason']}")
    messages = detail.get("error_messages") or []
    out += [why for why in (NOTHING_RAN, NONE_SUCCEEDED) if why in messages]
    return out or [fallback or "failed"]


def failed_components(report):
    """``[(component name, [reasons])]`` of every failed component of ``report``, in its order."""
    details = {d.get("test_name"): d for d in report.get("detailed_metrics") or []}
    return [(c["component_name"], failure_reasons(details.get(c["component_name"]) or {}, c.get("error")))
            for c in report.get("component_results") or [] if c.get("status") != "PASSED"]


def failure_lines(report):
    """One line per failed component: ``NAME — reason; reason`` (see :func:`failure_reasons`)."""
    return [f"{name} — {'; '.join(reasons)}" for name, reasons in failed_components(report)]


def render_summary(report):
    """``summary.txt`` (str): the seed's human summary of a report dict, with tabulate tables. Every name,
    label and message is escaped (:func:`~.fmt.printable`): a label holding a newline or ESC cannot
    forge a line ("1/1 passed") or restyle the text."""
    from tabulate import tabulate

    report = printable_tree(report)

    md, ex = report["metadata"], report["executive_summary"]
    si = md["system_info"]
    title = "AI Writing Flow V2 - Heavy Load Stress Test Summary" if md.get("kind") == "suite" \
        else f"loadgen - {md.get('kind')} - Stress Test Summary"
    lines = [title, "=" * len(title), "",
             f"Generated: {md['timestamp']}",
             f"Duration: {md['duration_seconds']:.2f} seconds",
             f"System: {si['cpu_count']} CPUs, {si['total_memory_gb']:.1f}GB RAM", "",
             "EXECUTIVE SUMMARY", "================",
             # Two figures, each with its own label: most readers look for the operations first.
             f"Operations succeeded: {operations_rate(report)}",
             f"Components passed: {ex['passed_components']}/{ex['total_components']} "
             f"({ex['overall_success_rate'] * 100:.1f}%, the seed's Overall Success Rate)",
             f"Total Operations: {ex['total_operations_executed']:,}", "",
             "COMPONENT RESULTS", "================"]
    for c in report["component_results"]:
        mark = "✅" if c["status"] == "PASSED" else "❌"
        lines.append(f"{mark} {c['component_name']}: {c['status']} ({_key_text(c)})")
    failed = failure_lines(report)
    if failed:
        lines += ["", "FAILED COMPONENTS", "=" * 17] + [f"FAIL {x}" for x in failed]
    lines += ["", "PERFORMANCE HIGHLIGHTS", "======================"]
    rows = []
    for d in report["detailed_metrics"]:
        lat = d["latency_ms"]
        rate = d["throughput_ops_per_sec"]
        rows.append([d["test_name"], f"{d['total_operations']:,}",
                     f"{d['success_rate'] if 'success_rate' in d else _rate(d):.1%}",
                     f"{rate:,.1f}" if rate < 1000 else f"{rate:,.0f}", _ms(lat.get("p50")), _ms(lat.get("p99")),
                     f"{d['max_concurrent_operations']:,}", f"{d['peak_memory_mb']:.0f}", f"{d['peak_cpu_percent']:.0f}"])
    lines.append(tabulate(rows, headers=["component", "ops", "success", "ops/s", "p50 ms", "p99 ms",
                                         "peak in flight", "peak MB", "peak CPU %"], disable_numparse=True,
                          colalign=("left",) + ("right",) * 8))
    crit = []
    for d in report["detailed_metrics"]:
        for c in d["criteria"]:
            v = c.get("value")
            crit.append([d["test_name"], criterion_text(c), "—" if v is None else f"{v:.4g}", "pass" if c["passed"] else "FAIL"])
    if crit:
        lines += ["", tabulate(crit, headers=["component", "criterion", "measured", "result"])]
        if any(c.get("default") for d in report["detailed_metrics"] for c in d["criteria"]):
            lines.append("(default): the scenario's own criterion, judged because none was given; any "
                         "--criterion replaces it")
    ops = op_table(report)
    if ops:
        lines += ["", "OPERATIONS OF THE MIX", "=" * 21, tabulate(ops, headers=OP_HEAD, disable_numparse=True),
                  "(completed operations of each op; timed out and crashed ones count in the totals only)"]
    measures, checks = named_tables(report)
    if measures:
        lines += ["", "NAMED MEASUREMENTS (loadgen.measure; the flow's stages)", "=" * 55,
                  tabulate(measures, headers=MEASURE_HEAD, disable_numparse=True)]
    if checks:
        lines += ["", "CHECKS (loadgen.check)", "=" * 22, tabulate(checks, headers=CHECK_HEAD, disable_numparse=True)]
    errors = error_lines(report)
    if errors:
        lines += ["", "ERRORS (most frequent first, with the first message)", "=" * 52] + errors
    acc = report["accounting"]
    lines += ["", "Accounting: " + ", ".join(f"{k} {v}" for k, v in acc.items())]
    cont = report.get("containment") if isinstance(report.get("containment"), dict) else {}
    if cont.get("output_dropped_bytes"):
        lines.append(f"Output: {cont['output_dropped_bytes']:,} bytes the targets printed past the cap of workers.log "
                     "were counted and dropped (--max-output-mb)")
    if cont.get("forked_copies"):
        lines.append(f"Forked copies: {cont['forked_copies']:,} copies of a worker, forked by an operation outside "
                     "os.fork, came back into a slot loop and were stopped before they counted anything")
    for b in report["breaches"]:
        lines.append(f"Breach: {b['metric']} = {b['value']:.1f} > {b['limit']:.1f}")
    for d in report["detailed_metrics"]:
        st = d.get("loop_stalls") or {}
        if st.get("count"):
            lines.append(f"Loop stalls in {d['test_name']}: {st['count']} (longest {st.get('max_ms')} ms, "
                         f"{st.get('total_ms')} ms in all): an operation blocked the event loop of an async worker")
        for e in d.get("thresholds_exceeded") or []:
            lines.append(f"Threshold exceeded (reported, the run went on): {e['metric']} = {e['value']:.1f} > "
                         f"{e['limit']:.1f} in {d['test_name']}")
    if report.get("fleet"):  # a fleet run (loadgen/fleet/): the per-machine table
        lines += [""] + render_fleet_text(report)
    lines += ["", "RECOMMENDATIONS", "==============="]
    lines += [f"• {r}" for r in report["recommendations"]] or ["• none"]
    lines += ["", "---", f"Generated by loadgen {md['version']} (exit code {report['exit_code']})", ""]
    return "\n".join(lines)


def _rate(d):
    ok, bad = d["successful_operations"], d["failed_operations"]
    return ok / (ok + bad) if ok + bad else 0.0


def _ms(v):
    return "—" if v is None else f"{v:.1f}" if v >= 1 else f"{v:.3f}"


def _key_text(c):
    if "max_capacity" in c:
        v = c["max_capacity"]
        return f"Max Capacity: {'—' if v is None else f'{v:.0f}'} concurrent operations"
    if "recovery_rate" in c:
        v = c["recovery_rate"]
        return f"Recovery Rate: {'—' if v is None else f'{v * 100:.1f}%'}"
    for k, v in c.items():
        if k not in ("component_name", "status", "operations_executed", "error"):
            label = k.replace("_", " ").title()
            if v is None:
                return f"{label}: —"
            return f"{label}: {v * 100:.1f}%" if k.endswith("rate") else f"{label}: {v:.4g}"
    return ""


def operations_rate(report):
    """``60.1% (601 of 1,000 completed)`` from the report's accounting ("none completed" without any)."""
    acc = report.get("accounting") or {}
    done = sum(acc.get(k, 0) for k in ("succeeded", "failed", "timed_out", "crashed"))
    ok = acc.get("succeeded", 0)
    dropped = f"; {acc['dropped']:,} arrivals dropped, not started" if acc.get("dropped") else ""
    return (f"{ok / done:.1%} ({ok:,} of {done:,} completed)" if done else "none completed") + dropped
