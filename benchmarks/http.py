"""HTTP ops against real servers: loadgen beside wrk, hey and Locust, each measured twice in this run.

Run: ``python benchmarks/http.py [--seconds 10] [--repeat 2] [--only throughput,open,sse,connections]``
(``LOCUST=/path/to/locust`` for a Locust outside PATH; nginx, wrk and hey from the Debian packages;
a generator that is not installed is left out, and said so).

1. **throughput** — nginx (one worker process, pinned to core 0) answering ``GET /`` with a 3-byte
   body; every generator pinned to core 1 (``taskset -c 1``: loadgen's master, monitor and its one
   worker all on that core), 50 keep-alive connections, ``--seconds`` each, rounds interleaved
   (wrk, hey, loadgen, …, then again). Prints req/s and p99 per run and, per round, loadgen ÷ hey,
   loadgen ÷ Locust and loadgen's p99 − hey's. "loadgen + aiohttp target" is what a user wrote
   before ``--url``: an ``async def`` target over one aiohttp session per worker.
2. **open** — ``--rate 20000`` against ``loadgen serve``'s ``/ping`` (server on core 0, loadgen on
   core 1, 200 connections that queue arrivals as wrk2's do: ``--slots 200 --max-lateness 5s``), with
   a 1 s server stall injected 4 s in (``POST /admin/stall?ms=1000``). The truth, as wrk2 computes
   it: an arrival intended at *t* during the stall waits until the stall ends, so the stalled
   arrivals' latencies are spread evenly over 0–1 s and, with ``f`` = 1 s ÷ the run, the p99 from
   intended start is ``1000 × (1 − 0.01 ÷ f)`` ms plus the unstalled service time. Prints the rate
   held (completed ÷ seconds ÷ 20,000) and loadgen's p99 against that truth.
3. **sse** — 1,000 streams in flight (``--concurrency 1000``, one worker) on ``loadgen serve``'s
   ``/stream?events=20&first_ms=200&gap_ms=10``: time to first event and inter-event p50 against
   the 200 ms and 10 ms the server is asked for; 1 stream in 50 goes to a second, nearly idle server
   (the control), whose whole-stream time shows how exact the measurement is (390 ms exactly) apart
   from what the loaded Python server itself slips.
4. **connections** — 10,000 keep-alive connections held open by 2 workers (each operation a stream of
   two events 3 s apart, so every connection stays busy): errors, and the pool's memory per
   connection (peak PSS at 10,000 less that at 100, ÷ 9,900).
"""

import os
import sys

# Run as a script, this file's folder comes first on sys.path and its name would hide the standard
# library's http package (urllib imports http.client): take the folder off before anything imports it.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import argparse  # noqa: E402
import csv  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

ROOT = os.path.dirname(HERE)
PY = sys.executable
CONNECTIONS = 50
LOCUSTFILE = '''
from locust import constant
from locust.contrib.fasthttp import FastHttpUser
from locust import task


class Get(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/")
'''
AIOHTTP_TARGET = '''
import aiohttp


def make(url):
    session = None

    async def get(inputs=None):
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with session.get(url) as r:
            await r.read()
            if r.status >= 400:
                raise RuntimeError(f"HTTP {r.status}")
    return get
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def wait_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Nginx:
    """nginx with one worker process, pinned to core 0, on a free loopback port."""

    def __init__(self, tmp):
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log warn;\n"
                    "events { worker_connections 20000; }\n"
                    "http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s;\n"
                    f"  server {{ listen 127.0.0.1:{self.port} backlog=4096; location / {{ return 200 \"ok\\n\"; }} }} }}\n")
        self.proc = subprocess.Popen(["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-c", conf,
                                      "-p", tmp], stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


class Serve:
    """``loadgen serve`` pinned to core 0 on a free port."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(["taskset", "-c", "0", PY, "-m", "loadgen", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True, env=env())
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"loadgen serve did not start: {line!r}")
        self.url = f"http://127.0.0.1:{m.group(1)}"

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def loadgen(args, out, core="1"):
    """``loadgen run ARGS`` pinned to ``core``; its report.json."""
    cmd = ["taskset", "-c", core, PY, "-m", "loadgen", "run", *args, "--quiet", "--max-cpu-percent", "100",
           "--out", out]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env())
    path = os.path.join(out, "report.json")
    if not os.path.exists(path):
        raise RuntimeError(f"loadgen exited {p.returncode} without a report: {p.stderr.strip()[-400:]}")
    with open(path) as f:
        rep = json.load(f)
    rep["_exit"] = p.returncode
    return rep


# ---------------------------------------------------------------- 1. throughput


def gen_wrk(url, seconds, tmp):
    p = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url],
                       capture_output=True, text=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", p.stdout)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else None
    return rps, p99


def gen_hey(url, seconds, tmp):
    p = subprocess.run(["taskset", "-c", "1", "hey", "-z", f"{seconds}s", "-c", str(CONNECTIONS), url],
                       capture_output=True, text=True)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1))
    m = re.search(r"99%+ in ([\d.]+) secs", p.stdout)
    return rps, float(m.group(1)) * 1000 if m else None


def gen_loadgen(url, seconds, tmp):
    rep = loadgen(["--url", url, "--concurrency", str(CONNECTIONS), "--workers", "1", "--duration", f"{seconds}s"],
                  tempfile.mkdtemp(dir=tmp))
    return steady(rep)


def gen_loadgen_aiohttp(url, seconds, tmp):
    path = os.path.join(tmp, "aiohttp_target.py")
    with open(path, "w") as f:
        f.write(AIOHTTP_TARGET)
    rep = loadgen(["--target", f"{path}:make", "--target-factory", "--target-arg", f"url={url}", "--concurrency",
                   str(CONNECTIONS), "--workers", "1", "--duration", f"{seconds}s"], tempfile.mkdtemp(dir=tmp))
    return steady(rep)


def steady(rep):
    d = rep["detailed_metrics"][0]
    if rep["accounting"]["failed"]:
        raise RuntimeError(f"{rep['accounting']['failed']} failed requests: {d.get('errors')}")
    return d["throughput_ops_per_sec"], rep["latency_ms"]["p99"]


def locust_binary():
    return os.environ.get("LOCUST") or shutil.which("locust")


def gen_locust(url, seconds, tmp):
    f = os.path.join(tmp, "locustfile.py")
    with open(f, "w") as fh:
        fh.write(LOCUSTFILE)
    prefix = os.path.join(tempfile.mkdtemp(dir=tmp), "stats")
    subprocess.run(["taskset", "-c", "1", locust_binary(), "-f", f, "--headless", "-u", str(CONNECTIONS), "-r",
                    str(CONNECTIONS), "-t", f"{seconds}s", "--host", url.rstrip("/"), "--csv", prefix, "--only-summary",
                    "--loglevel", "ERROR"], capture_output=True, text=True, timeout=seconds + 60)
    with open(prefix + "_stats.csv") as fh:
        row = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"][0]
    return float(row["Requests/s"]), float(row["99%"])


GENERATORS = [("wrk (C)", "wrk", gen_wrk), ("hey (Go)", "hey", gen_hey), ("loadgen --url", None, gen_loadgen),
              ("loadgen + aiohttp target", None, gen_loadgen_aiohttp), ("Locust FastHttpUser", "locust", gen_locust)]


def throughput(seconds, repeat, tmp):
    gens = []
    for name, binary, fn in GENERATORS:
        found = (locust_binary() if binary == "locust" else shutil.which(binary)) if binary else True
        if found:
            gens.append((name, fn))
        else:
            print(f"  ({name}: not installed, left out)")
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        print("  nginx is not installed: apt-get install nginx-light")
        return
    ngx = Nginx(tmp)
    try:
        results = {name: [] for name, _ in gens}
        for r in range(repeat):
            for name, fn in gens:
                rps, p99 = fn(ngx.url, seconds, tmp)
                results[name].append((rps, p99))
                print(f"  round {r + 1}  {name:<26} {rps:>10,.0f} req/s   p99 {fmt_ms(p99)}", flush=True)
    finally:
        ngx.close()
    print()
    print(f"  {'generator':<26} " + "  ".join(f"{'run ' + str(i + 1):>24}" for i in range(repeat)))
    for name, runs in results.items():
        print(f"  {name:<26} " + "  ".join(f"{rps:>10,.0f} req/s p99 {fmt_ms(p99):>8}" for rps, p99 in runs))
    ours = results.get("loadgen --url")
    for other in ("hey (Go)", "Locust FastHttpUser", "wrk (C)", "loadgen + aiohttp target"):
        if ours and results.get(other):
            ratios = [a[0] / b[0] for a, b in zip(ours, results[other])]
            print(f"  loadgen --url ÷ {other:<24} " + "  ".join(f"{x:.2f}×" for x in ratios))
    if ours and results.get("hey (Go)"):
        deltas = [a[1] - b[1] for a, b in zip(ours, results["hey (Go)"]) if a[1] is not None and b[1] is not None]
        print("  loadgen p99 − hey p99 (ms)             " + "  ".join(f"{x:+.2f}" for x in deltas))


def fmt_ms(v):
    return "—" if v is None else f"{v:.2f} ms"


# ---------------------------------------------------------------- 2. open model with a server stall


def open_model(seconds, repeat, tmp, rate=20000, stall_ms=1000, stall_at_s=4.0):
    seconds = max(seconds, 10)
    for r in range(repeat):
        srv = Serve()
        try:
            def stall():
                time.sleep(stall_at_s)
                req = urllib.request.Request(srv.url + f"/admin/stall?ms={stall_ms}", method="POST")
                urllib.request.urlopen(req, timeout=30).read()
            t = threading.Thread(target=stall, daemon=True)
            out = tempfile.mkdtemp(dir=tmp)
            t.start()
            rep = loadgen(["--url", srv.url + "/ping", "--rate", str(rate), "--duration", f"{seconds}s", "--workers",
                           "1", "--slots", "200", "--max-lateness", "5s", "--max-concurrent-operations", "200"], out)
            t.join()
        finally:
            srv.close()
        acc = rep["accounting"]
        d = rep["detailed_metrics"][0]
        held = acc["succeeded"] / seconds / rate
        f = stall_ms / 1000 / seconds
        service_p50 = (d.get("service_time_ms") or {}).get("p50") or 0.0
        truth = stall_ms * (1 - 0.01 / f) + service_p50 if f > 0.01 else None
        p99 = rep["latency_ms"]["p99"]
        print(f"  run {r + 1}: rate held {held:.4f} (completed {acc['succeeded']:,} of {rate * seconds:,} asked, "
              f"dropped {acc['dropped']:,}); p99 from intended start {p99:.1f} ms vs truth {truth:.1f} ms "
              f"({(p99 / truth - 1) * 100:+.1f} %); service-time p99 "
              f"{(d.get('service_time_ms') or {}).get('p99')} ms (what a CO-blind tool reports)")


# ---------------------------------------------------------------- 3. SSE at 1,000 streams


def sse(seconds, repeat, tmp, streams=1000, control_weight=50):
    """1,000 streams: 49 in 50 on one ``loadgen serve`` (the load), 1 in 50 on a second, nearly idle one (the
    control: its streams should last exactly 200 + 19 × 10 = 390 ms). The control tells how far the
    measurement is off; the loaded server's own lateness is what it adds beyond that."""
    path = "/stream?events=20&first_ms=200&gap_ms=10"
    for r in range(repeat):
        busy, idle = Serve(), Serve()
        try:
            rep = loadgen(["--url", f"busy={busy.url}{path}@{control_weight - 1}", "--url", f"control={idle.url}{path}@1",
                           "--header", "Accept: text/event-stream", "--concurrency", str(streams), "--workers", "1",
                           "--duration", f"{max(seconds, 5)}s", "--max-concurrent-operations", str(streams)],
                          tempfile.mkdtemp(dir=tmp), core="1")
        finally:
            busy.close()
            idle.close()
        d = rep["detailed_metrics"][0]
        m, ops = d["measures_ms"], d["ops"]
        print(f"  run {r + 1}: {rep['accounting']['succeeded']:,} streams, failed {rep['accounting']['failed']}; "
              f"ttft p50 {m['ttft']['p50']:.1f} ms (server: 200; {m['ttft']['p50'] - 200:+.1f}), p99 "
              f"{m['ttft']['p99']:.1f}; inter-event p50 {m['inter_event']['p50']:.2f} ms (server: 10; "
              f"{m['inter_event']['p50'] - 10:+.2f}), p99 {m['inter_event']['p99']:.2f}; whole stream p50: control "
              f"{ops['control']['latency_ms']['p50']:.1f} ms (exact: 390; {ops['control']['latency_ms']['p50'] - 390:+.1f}),"
              f" loaded server {ops['busy']['latency_ms']['p50']:.1f} ms")


# ---------------------------------------------------------------- 4. 10,000 connections


def connections(seconds, repeat, tmp, many=10000, few=100):
    for r in range(repeat):
        peaks = {}
        for n in (few, many):
            srv = Serve()
            try:
                rep = loadgen(["--url", srv.url + "/stream?events=2&first_ms=100&gap_ms=3000", "--header",
                               "Accept: text/event-stream", "--concurrency", str(n), "--workers", "2",
                               "--duration", f"{max(seconds, 10)}s", "--max-concurrent-operations", str(n)],
                              tempfile.mkdtemp(dir=tmp), core="0,1")
            finally:
                srv.close()
            d = rep["detailed_metrics"][0]
            peaks[n] = (d["peak_memory_mb"], rep["accounting"], d["performance_metrics"].get("http_connections_opened"),
                        d["max_concurrent_operations"])
        (lo_mb, _, _, _), (hi_mb, acc, opened, peak) = peaks[few], peaks[many]
        per_conn_kb = (hi_mb - lo_mb) * 1024 / (many - few)
        print(f"  run {r + 1}: {many:,} in flight (peak {peak:,}), connections opened {opened:,}, failed "
              f"{acc['failed'] + acc['timed_out'] + acc['crashed']}; pool PSS {lo_mb:.1f} MB at {few} → {hi_mb:.1f} MB "
              f"at {many:,}: {per_conn_kb:.1f} KB per connection")


SECTIONS = {"throughput": throughput, "open": open_model, "sse": sse, "connections": connections}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default=",".join(SECTIONS))
    args = ap.parse_args()
    from loadgen.engine.aslots import loop_kind

    print(f"loadgen HTTP benchmark: {os.cpu_count()} cores, event loop {loop_kind()}, {args.seconds} s a run, "
          f"{args.repeat} runs each")
    with tempfile.TemporaryDirectory(prefix="loadgen-http-bench-") as tmp:
        for name in args.only.split(","):
            print(f"\n{name}")
            SECTIONS[name](args.seconds, args.repeat, tmp)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
