"""``run --target MOD:fn`` without a scenario: exactly the load asked, and records as the target asks."""

import json

from loadgen.streams import read_jsonl


def test_run_with_only_a_target_runs_one_phase_and_only_the_criteria_given(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:sleep_ms", "--concurrency", "3", "--duration", "2s",
                             "--criterion", "p95_ms < 1000", "--out", "r", "--quiet")
    assert code == 0, err
    events = read_jsonl(str(tmp_path / "r" / "events.jsonl"))
    starts = [e for e in events if e.get("type") == "phase" and e.get("name") == "start"]
    assert [s["plan"]["name"] for s in starts] == ["load"]  # no baseline phase
    assert starts[0]["plan"]["concurrency"] == 3
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (d,) = report["detailed_metrics"]
    assert [c["criterion"] for c in d["criteria"]] == ["p95_ms < 1000"]
    assert d["criteria"][0]["passed"] and d["latency_ms"]["p95"] >= 10  # a 10 ms sleep


def test_records_reach_a_keyword_target_as_keywords_and_a_mismatch_is_exit_2(cli, tmp_path):
    recs = tmp_path / "recs.jsonl"
    recs.write_text("".join(json.dumps({"user": f"u{i}", "amount": i}) + "\n" for i in range(5)))
    seen = tmp_path / "seen.jsonl"
    code, out, err = cli.run("run", "--target", "_targets:pay", "--target-arg", f"path={seen}", "--inputs",
                             str(recs), "--inputs-mode", "once", "--duration", "5s", "--out", "r", "--quiet")
    assert code == 0, err
    got = sorted(json.loads(x)["user"] for x in seen.read_text().splitlines())
    assert got == [f"u{i}" for i in range(5)]
    recs.write_text(json.dumps({"user": "u"}) + "\n")
    code, out, err = cli.run("run", "--target", "_targets:pay", "--inputs", str(recs), "--duration", "2s",
                             "--out", "r2", "--quiet")
    assert code == 2
    assert "missing a required argument: 'amount'" in err and "Traceback" not in err
    assert not (tmp_path / "r2").exists()  # refused before anything ran


def test_run_without_scenario_or_target_says_what_to_give(cli):
    code, out, err = cli.run("run", "--duration", "1s")
    assert code == 2 and "--target MOD:fn" in err


def test_errors_are_in_plain_sight_on_the_console_and_in_the_summary(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:fail_always", "--duration", "1s", "--out", "r")
    assert code == 1, err  # no criterion given: the default one, failures fail a run of your own target
    assert "error_rate == 0 (default)" in out
    assert "error load: " in out and "× ValueError: this operation always fails" in out
    text = (tmp_path / "r" / "summary.txt").read_text()
    assert "ERRORS (most frequent first" in text and "ValueError: this operation always fails" in text
    assert "Operations succeeded: 0.0% (0 of " in text and "\nComponents passed: 0/1 (0.0%" in text


def test_a_piped_run_prints_plain_progress_lines_and_quiet_prints_none(cli, tmp_path):
    args = ["run", "--target", "_targets:sleep_ms", "--duration", "3.5s", "--progress-interval", "1s"]
    code, out, err = cli.run(*args, "--out", "a")
    assert code == 0, err
    lines = [x for x in out.splitlines() if "[load] ops/s" in x]
    assert len(lines) >= 2 and "\r" not in out and "\x1b" not in out  # plain lines, no terminal codes
    code, out, err = cli.run(*args, "--out", "b", "--quiet")
    assert code == 0 and "ops/s" not in out and "ops/s" not in err


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_port_serves_live_prometheus_metrics_during_the_run(cli, tmp_path):
    import time
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    port = _free_port()
    p = cli.start("run", "--target", "_targets:sleep_ms", "--concurrency", "2", "--duration", "4s",
                  "--metrics-port", str(port), "--out", "r", "--quiet")
    fams, deadline = {}, time.monotonic() + 15
    while time.monotonic() < deadline and "loadgen_operations_succeeded" not in fams:
        time.sleep(0.3)
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            continue
        fams = {f.name: f for f in text_string_to_metric_families(text)}
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    ok = {s.name: s.value for s in fams["loadgen_operations_succeeded"].samples}
    assert ok["loadgen_operations_succeeded_total"] > 0
    hist = {s.labels.get("le"): s.value for s in fams["loadgen_latency_seconds"].samples
            if s.name.endswith("_bucket")}
    assert hist["0.005"] == 0 < hist["0.025"] == hist["+Inf"]  # a 10 ms sleep: all between 5 and 25 ms
    assert {s.labels["name"] for s in fams["loadgen_threshold"].samples} >= {"max_memory_mb"}
    # The run is over: nothing listens on the port any more (SO_REUSEADDR: the scrape's TIME_WAIT aside).
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_metrics_port_taken_is_exit_2_before_anything_runs(cli, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out, err = cli.run("run", "--target", "_targets:sleep_ms", "--duration", "1s", "--metrics-port",
                                 str(port), "--out", "r")
    assert code == 2 and f"--metrics-port {port}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
