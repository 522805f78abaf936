"""HTTP ops in real runs: ``loadgen run --url`` against ``loadgen serve`` (and nginx where installed).

What must hold: keep-alive (connections opened ≤ operations in flight, the rest reused), one op per
URL template with its own figures, a status ≥ 400 or a refused connection a failure counted under
its endpoint, streaming timings as named measurements criteria can use, --op-timeout cancelling a
request, open model and plans. Timings are asserted for order and with wide bounds only.
"""

import json
import os
import shutil
import socket
import subprocess

import pytest

from _helpers import start_serve, wait_for

RUN = ("--workers", "1", "--quiet")


def report(path):
    with open(os.path.join(path, "report.json")) as f:
        return json.load(f)


def component(rep):
    return rep["detailed_metrics"][0]


def adds_up(acc):
    return acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"] + acc["lost"]


def test_get_keeps_connections_alive_and_names_the_op_by_its_template(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "--url", f"{srv.url}/ping", "--concurrency", "8", "--duration", "2s",
                             "--out", str(tmp_path / "r"), *RUN)
    assert code == 0, err
    rep = report(tmp_path / "r")
    d = component(rep)
    acc = rep["accounting"]
    assert acc["succeeded"] > 100 and acc["failed"] == 0 and adds_up(acc)
    assert list(d["ops"]) == ["GET /ping"] and d["ops"]["GET /ping"]["succeeded"] == acc["succeeded"]
    pm = d["performance_metrics"]
    assert 1 <= pm["http_connections_opened"] <= 8  # one per operation in flight, at most
    assert pm["http_connections_reused"] == acc["dispatched"] - pm["http_connections_opened"]
    assert pm["http_bytes_received"] > acc["succeeded"] * 3 and pm["http_bytes_sent_per_s"] > 0
    assert {"ttfb", "transfer", "connect"} <= set(d["measures_ms"])
    assert d["measures_ms"]["ttfb"]["count"] == acc["dispatched"]


def test_statuses_and_refused_connections_are_failures_under_their_endpoint(cli, tmp_path):
    srv = start_serve(cli)
    records = tmp_path / "ids.jsonl"
    records.write_text("".join(json.dumps({"id": i}) + "\n" for i in (1, 99999, 2)))  # odd: each op meets each
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        down = s.getsockname()[1]
    code, out, err = cli.run("run", "--url", f"GET {srv.url}/drafts/{{id}}@1",
                             "--url", f"GET http://127.0.0.1:{down}/ping@1", "--inputs", str(records),
                             "--concurrency", "2", "--operations", "200", "--out", str(tmp_path / "r"), *RUN)
    assert code == 1, (code, err)
    assert "Traceback" not in err
    d = component(report(tmp_path / "r"))
    drafts, ping = d["ops"]["GET /drafts/{id}"], d["ops"]["GET /ping"]
    assert drafts["succeeded"] > 0 and drafts["errors"] == {"HTTP 404 GET /drafts/{id}": drafts["failed"]}
    assert drafts["failed"] > 0
    assert ping["succeeded"] == 0 and ping["errors"] == {"ConnectionRefusedError": ping["failed"]}
    assert d["errors"] == {"HTTP 404 GET /drafts/{id}": drafts["failed"], "ConnectionRefusedError": ping["failed"]}
    assert "HTTP 404 GET /drafts/{id}" not in d["tracebacks"]  # a failure that names itself keeps no traceback


def test_a_plan_with_http_ops_json_bodies_and_expected_statuses(cli, tmp_path):
    srv = start_serve(cli)
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
[[scenario]]
name = "load"
concurrency = 4
operations = 300

[[scenario.ops]]
url = "{srv.url}/drafts/{{id}}"
name = "read"
weight = 9
expect_status = "200,404"

[[scenario.ops]]
url = "{srv.url}/drafts"
method = "POST"
json = '{{"title": "t{{id}}"}}'
weight = 1
""")
    records = tmp_path / "ids.jsonl"
    records.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(150)))
    code, out, err = cli.run("run", "--config", str(plan), "--inputs", str(records), "--out", str(tmp_path / "r"),
                             *RUN)
    assert code == 0, err
    d = component(report(tmp_path / "r"))
    read, write = d["ops"]["read"], d["ops"]["POST /drafts"]
    assert read["failed"] == 0 and write["failed"] == 0  # 404 expected on read; POST is 201
    assert read["operations"] + write["operations"] == 300
    assert abs(read["operations"] - 9 * write["operations"]) <= 10


def test_sse_streams_are_timed_event_by_event(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "--url", f"{srv.url}/stream?events=5&first_ms=100&gap_ms=20",
                             "--header", "Accept: text/event-stream", "--concurrency", "20", "--duration", "2s",
                             "--criterion", "p50_ms{measure=ttft} < 5000", "--out", str(tmp_path / "r"), *RUN)
    assert code == 0, err
    d = component(report(tmp_path / "r"))
    m = d["measures_ms"]
    n = d["accounting"]["succeeded"]
    assert m["ttft"]["count"] == n and m["inter_event"]["count"] == 4 * n and m["stream"]["count"] == n
    assert 90 <= m["ttft"]["p50"] < 1000  # the first event is 100 ms in: never sooner
    assert 15 <= m["inter_event"]["p50"] < 500
    assert d["performance_metrics"]["http_events"] == 5 * n


def test_op_timeout_cancels_the_request(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "--url", f"{srv.url}/stream?events=2&first_ms=5000&gap_ms=10@1",
                             "--url", f"{srv.url}/ping@1", "--concurrency", "2", "--duration", "1500ms",
                             "--op-timeout", "300ms", "--criterion", "timed_out > 0", "--out", str(tmp_path / "r"), *RUN)
    assert code == 0, err
    rep = report(tmp_path / "r")
    acc = rep["accounting"]
    assert acc["timed_out"] >= 2 and adds_up(acc)
    assert component(rep)["ops"]["GET /ping"]["failed"] == 0  # the cancelled requests' connections were dropped


def test_open_model_holds_its_rate(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "--url", f"{srv.url}/ping", "--rate", "500", "--duration", "2s",
                             "--out", str(tmp_path / "r"), *RUN)
    assert code == 0, err
    rep = report(tmp_path / "r")
    d = component(rep)
    assert abs(d["throughput_ops_per_sec"] - 500) / 500 < 0.1
    assert rep["accounting"]["dropped"] == 0


def test_a_scenario_on_an_http_op(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "concurrent_load", "--url", f"POST {srv.url}/kickoff", "--json",
                             '{"topic": "load"}', "--concurrency", "4", "--duration", "2s",
                             "--flow-param", "processing_time_base=0.01", "--out", str(tmp_path / "r"), *RUN)
    assert code in (0, 1), err  # the served flow fails 5 % of its kickoffs (422): the verdict is the scenario's
    d = component(report(tmp_path / "r"))
    ops = d["ops"]["POST /kickoff"]
    assert ops["succeeded"] > 0
    assert set(ops["errors"]) <= {"HTTP 422 POST /kickoff"}


@pytest.fixture
def nginx(tmp_path):
    """nginx (the Debian package) on a free loopback port, answering ``ok`` to every GET."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} location /missing {{ return 404; }} }} }}
""")
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False
        assert wait_for(up, timeout=10), "nginx did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_against_nginx(cli, tmp_path, nginx):
    code, out, err = cli.run("run", "--url", f"{nginx}/@9", "--url", f"{nginx}/missing@1", "--concurrency", "10",
                             "--duration", "2s", "--criterion", "success_rate{op=GET /} > 0.99",
                             "--out", str(tmp_path / "r"), *RUN)
    rep = report(tmp_path / "r")
    d = component(rep)
    assert d["ops"]["GET /"]["failed"] == 0 and d["ops"]["GET /"]["succeeded"] > 100
    assert d["ops"]["GET /missing"]["errors"] == {"HTTP 404 GET /missing": d["ops"]["GET /missing"]["failed"]}
    assert code == 0, err  # the user's criterion replaces the default verdict (failures fail)


def test_checks_count_without_failing_the_op(cli, tmp_path):
    srv = start_serve(cli)
    code, out, err = cli.run("run", "--url", f"{srv.url}/drafts/3", "--check", "status == 200",
                             "--check", "json .id == 3", "--check", "json .id == 4",
                             "--check", "header Content-Type contains json", "--concurrency", "2",
                             "--operations", "50", "--out", str(tmp_path / "r"), *RUN)
    assert code == 0, err
    d = component(report(tmp_path / "r"))
    checks = d["checks"]
    assert checks["status == 200"]["passes"] == 50 and checks["json .id == 3"]["passes"] == 50
    assert checks["json .id == 4"]["fails"] == 50 and d["accounting"]["failed"] == 0
    assert checks["header Content-Type contains json"]["rate"] == 1.0


@pytest.fixture
def tls_server(tmp_path):
    """An HTTPS server on loopback (a self-signed certificate made by openssl), keep-alive, in a thread."""
    import http.server
    import ssl
    import threading

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (it makes the test's certificate)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tls_verifies_unless_insecure(cli, tmp_path, tls_server):
    code, out, err = cli.run("run", "--url", f"{tls_server}/", "--concurrency", "1", "--operations", "5",
                             "--out", str(tmp_path / "strict"), *RUN)
    d = component(report(tmp_path / "strict"))
    assert code == 1 and d["accounting"]["succeeded"] == 0
    assert set(d["errors"]) == {"SSLCertVerificationError"}
    code, out, err = cli.run("run", "--url", f"{tls_server}/", "--insecure", "--concurrency", "2", "--operations",
                             "20", "--out", str(tmp_path / "insecure"), *RUN)
    assert code == 0, err
    d = component(report(tmp_path / "insecure"))
    assert d["accounting"]["succeeded"] == 20 and d["measures_ms"]["tls"]["count"] >= 1


def test_the_example_plan_against_serve(cli, tmp_path):
    from _helpers import ROOT

    srv = start_serve(cli, "--flow-param", "processing_time_base=0.01")
    text = open(os.path.join(ROOT, "examples", "http_service.toml")).read()
    plan = tmp_path / "http_service.toml"
    plan.write_text(text.replace("http://127.0.0.1:8080", srv.url).replace('duration = "5s"', 'duration = "2s"')
                    .replace('"data/ids.jsonl"', json.dumps(os.path.join(ROOT, "examples", "data", "ids.jsonl"))))
    code, out, err = cli.run("run", "--config", str(plan), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, out + err
    rep = report(tmp_path / "r")
    assert [c["status"] for c in rep["component_results"]] == ["PASSED", "PASSED"]
    drafts, stream = rep["detailed_metrics"]
    assert set(drafts["ops"]) == {"read", "write"} and drafts["checks"]["json .id exists"]["fails"] == 0
    assert stream["measures_ms"]["ttft"]["count"] == stream["accounting"]["succeeded"] > 0
