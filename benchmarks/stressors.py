"""How well the stressors do what they are asked, against stress-ng when it is installed.

    python benchmarks/stressors.py                       # everything (~65 s)
    python benchmarks/stressors.py --only cpu --loads 50 --seconds 10
    python benchmarks/stressors.py --only memory --repeat 3
    python benchmarks/stressors.py --only io --io-seconds 5

CPU: machine-wide ``psutil.cpu_percent`` in 1 s readings over ``--seconds``
(after a 1 s settle) with a burner on every usable core; mean error in
points against the asked load and the stdev of the readings.  Each reading
is split into the stressor's own processes, every other process ("others":
other people's work on a shared machine; when it is above ~0.5 the error
columns measure them, not the burner) and what no process accounts for.
The "quiet" columns keep only the seconds in which other processes took
under a point and none was started.  stress-ng ``--cpu N --cpu-load P`` is
measured the same way, in the same run, right after ours.

Memory: a 1 GiB ballast, ``--repeat`` times, alternating with stress-ng
``--vm 1 --vm-bytes 1g --vm-keep`` (timed from launch to 99 % resident):
start() → every page resident, and the resident size error (child RSS minus
its pre-ballast RSS).  In this VM the first touch of guest memory that the
host has taken back is several times slower, hence first / min / median /
max.

I/O: ``--io-seconds`` of disk write+fsync+read-back and loopback TCP echo.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import multiprocess  # noqa: E402
import psutil  # noqa: E402

from loadgen.stressors import MB, CpuStressor, IoStressor, MemoryStressor  # noqa: E402

SETTLE_S = 1.0
MEMORY_MB = 1024
STRESS_NG_READY_FRACTION = 0.99
STRESS_NG_TIMEOUT_S = 20.0
QUIET_OTHERS_POINTS = 1.0  # a 1 s reading is "quiet" when other processes took less than this
MIN_QUIET_READINGS = 3


def make_spawn(method, started):
    ctx = multiprocess.get_context(method)

    def spawn(target, args, name):
        p = ctx.Process(target=target, args=args, name=name, daemon=True)
        p.start()
        started.append(p)
        return p

    return spawn


def reap(started):
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(2.0)


def table(title, headers, rows):
    """Print ``rows`` under ``headers``; floats with 2 decimals (3 below 10), None as '-'."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in list(r) + [None] * (len(headers) - len(r))]
                                           for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


class Signed(float):
    """A float printed with its sign (errors, differences)."""


def _fmt(c):
    if c is None:
        return "-"
    if isinstance(c, Signed):
        return f"{c:+.2f}"
    if isinstance(c, float):
        return f"{c:.3f}" if abs(c) < 10 else f"{c:.2f}" if abs(c) < 1000 else f"{c:.0f}"
    return str(c)


# ---------------------------------------------------------------- CPU


def _cpu_seconds_by_pid():
    """pid → user + system CPU seconds, for every process (kernel threads included)."""
    out = {}
    for p in psutil.process_iter(["cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            out[p.pid] = t.user + t.system
    return out


def _forks_since_boot():
    """The ``processes`` line of /proc/stat: forks since boot (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("processes "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_cpu(load, seconds, pids_of):
    """1-s readings of machine-wide CPU %, split into the stressor's share and everyone else's.

    ``pids_of()`` → the stressor's pids.  "others" is measured (the CPU time
    of every other process, this one included), not inferred; what is left
    ("unattributed") is interrupts and the difference between the kernel's
    tick-sampled /proc/stat and the processes' exact run time.
    """
    ncpu = psutil.cpu_count()
    time.sleep(SETTLE_S)
    readings, ours, others, forks = [], [], [], []
    psutil.cpu_percent()
    ids = set(pids_of())
    before, t_before, forks_before = _cpu_seconds_by_pid(), time.monotonic(), _forks_since_boot()
    t0 = t_before
    for i in range(seconds):
        time.sleep(max(0.0, t0 + i + 1 - time.monotonic()))
        busy = psutil.cpu_percent()
        now, t_now, forks_now = _cpu_seconds_by_pid(), time.monotonic(), _forks_since_boot()
        scale = 100.0 / (ncpu * (t_now - t_before))
        mine = sum(now[p] - before.get(p, 0.0) for p in now if p in ids)
        rest = sum(now[p] - before.get(p, 0.0) for p in now if p not in ids)
        forks.append(None if forks_now is None else forks_now - forks_before)
        before, t_before, forks_before = now, t_now, forks_now
        readings.append(busy)
        ours.append(mine * scale)
        others.append(rest * scale)
    mean = statistics.mean(readings)
    # Quiet: other processes took little, and none was born (a process that
    # starts and ends between two samples is seen by /proc/stat, not by us).
    quiet = [r for r, o, f in zip(readings, others, forks) if o < QUIET_OTHERS_POINTS and not f]
    enough = len(quiet) >= MIN_QUIET_READINGS
    return {
        "mean": mean,
        "error": mean - load,
        "stdev": statistics.stdev(readings) if len(readings) > 1 else 0.0,
        "ours": statistics.mean(ours),
        "others": statistics.mean(others),
        "quiet_n": len(quiet),
        "quiet_error": statistics.mean(quiet) - load if enough else None,
        "quiet_stdev": statistics.stdev(quiet) if enough else None,
        "readings": readings,
        "others_by_reading": others,
        "ours_by_reading": ours,
        "forks_by_reading": forks,
    }


def bench_cpu_ours(load, seconds, method):
    started = []
    s = CpuStressor(load)
    try:
        s.start(make_spawn(method, started))
        s.wait_started(15.0)
        return measure_cpu(load, seconds, lambda: s.pids)
    finally:
        s.stop()
        reap(started)


def bench_cpu_stress_ng(load, seconds, ncores):
    cmd = ["stress-ng", "--cpu", str(ncores), "--cpu-load", f"{load:g}",
           "--timeout", f"{int(seconds + SETTLE_S + 3)}s", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # let it fork its workers
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr.read().strip()}")
        root = psutil.Process(proc.pid)
        return measure_cpu(load, seconds, lambda: [root.pid] + [c.pid for c in root.children(recursive=True)])
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_cpu(args):
    ncores = len(os.sched_getaffinity(0))
    have_sng = shutil.which("stress-ng") is not None and not args.no_stress_ng
    rows = []

    def row(name, r, load, versus=None):
        q = r["quiet_error"]
        out = [name, r["mean"], Signed(r["error"]), r["stdev"], r["ours"], r["others"],
               Signed(r["mean"] - r["ours"] - r["others"]), r["quiet_n"], None if q is None else Signed(q),
               r["quiet_stdev"]]
        if versus is not None:
            out += [Signed(abs(r["error"]) - abs(versus["error"])),
                    r["stdev"] / versus["stdev"] if versus["stdev"] else None]
        return out

    for load in args.loads:
        ours = bench_cpu_ours(load, args.seconds, args.start_method)
        sng = bench_cpu_stress_ng(load, args.seconds, ncores) if have_sng else None
        rows.append(row(f"loadgen {load:g}%", ours, load, sng))
        if sng is not None:
            rows.append(row(f"stress-ng {load:g}%", sng, load))
        if args.verbose:
            for name, r in (("loadgen", ours), ("stress-ng", sng)):
                if r is not None:
                    print(f"  {name} {load:g}% readings: {r['readings']}")
                    print(f"  {name} {load:g}% own:      {[round(o, 1) for o in r['ours_by_reading']]}")
                    print(f"  {name} {load:g}% others:   {[round(o, 1) for o in r['others_by_reading']]}")
                    print(f"  {name} {load:g}% forks:    {r['forks_by_reading']}")
    table(f"CPU load, all {ncores} cores: {args.seconds} x 1 s readings of psutil.cpu_percent (machine-wide). "
          f"Split: the stressor's processes, all other processes, unattributed (irq, tick sampling). "
          f"'quiet': only the seconds where other processes took < {QUIET_OTHERS_POINTS:g} point "
          f"and none was started"
          + ("" if have_sng else " (stress-ng skipped)" if args.no_stress_ng else " (stress-ng not found)"),
          ["run", "mean %", "error pts", "stdev pts", "stressor %", "others %", "unattrib.", "quiet s",
           "quiet err", "quiet sd", "|err| - sng's", "stdev / sng's"],
          rows)


# ---------------------------------------------------------------- memory


def bench_memory_ours(method, huge_pages=False):
    started = []
    s = MemoryStressor(MEMORY_MB, huge_pages=huge_pages)
    try:
        s.start(make_spawn(method, started))
        if not s.wait_resident(STRESS_NG_TIMEOUT_S):
            return None
        return s.stats()
    finally:
        s.stop()
        reap(started)


def bench_memory_stress_ng():
    """Launch → the vm worker's RSS reaches 99 % of 1 GiB above its own start-up RSS."""
    t0 = time.monotonic()
    proc = subprocess.Popen(["stress-ng", "--vm", "1", "--vm-bytes", f"{MEMORY_MB}m", "--vm-keep",
                             "--timeout", f"{int(STRESS_NG_TIMEOUT_S)}s", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        root = psutil.Process(proc.pid)
        base = {}
        while time.monotonic() - t0 < STRESS_NG_TIMEOUT_S:
            best = 0
            for c in root.children(recursive=True):
                try:
                    rss = c.memory_info().rss
                except psutil.Error:
                    continue
                base.setdefault(c.pid, rss)
                best = max(best, rss - base[c.pid])
            if best >= STRESS_NG_READY_FRACTION * MEMORY_MB * MB:
                return time.monotonic() - t0
            time.sleep(0.005)
        return None
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_memory(args):
    """Runs alternate loadgen / stress-ng (first pair loadgen first, then the other way round).

    The first touch of guest memory that the host does not back (after a
    while freed, it is handed back) costs ~2.5 s per GiB here for either
    tool; a run right after another one finds it warm.  Hence min / median /
    max rather than a mean, and the order alternates.
    """
    have_sng = shutil.which("stress-ng") is not None and not args.no_stress_ng
    ours, sng = [], []
    for i in range(args.repeat):
        steps = [lambda: ours.append(bench_memory_ours(args.start_method, args.huge_pages))]
        if have_sng:
            steps.append(lambda: sng.append(bench_memory_stress_ng()))
        for step in (steps if i % 2 == 0 else steps[::-1]):
            step()
    if args.verbose:
        print(f"  loadgen to-resident s: {[r and r['time_to_resident_s'] for r in ours]}")
        print(f"  stress-ng to-99% s:    {[t and round(t, 3) for t in sng]}")
    rows = []
    ok = [r for r in ours if r]
    if ok:
        t = [r["time_to_resident_s"] for r in ok]
        rows.append(["loadgen (to 100%)", len(ok), t[0], min(t), statistics.median(t), max(t),
                     statistics.median(r["alloc_s"] for r in ok), statistics.median(r["resident_mb"] for r in ok),
                     Signed(max((r["size_error_percent"] for r in ok), key=abs))])
    if len(ok) < len(ours):
        rows.append(["loadgen: timed out", len(ours) - len(ok)])
    good = [t for t in sng if t is not None]
    if good:
        rows.append(["stress-ng --vm-keep (to 99%)", len(good), good[0], min(good), statistics.median(good),
                     max(good)])
    table(f"Memory ballast {MEMORY_MB} MB ({args.start_method}{', huge pages' if args.huge_pages else ''}): seconds from start to resident; "
          f"loadgen ran first in the first pair (cold memory), stress-ng in the second",
          ["run", "n", "first s", "min s", "median s", "max s", "child alloc s", "resident MB", "worst size err %"],
          rows)


# ---------------------------------------------------------------- I/O


def run_io(args):
    rows = []
    for workers in args.io_workers:
        started = []
        s = IoStressor(file_bytes=4 * MB, max_total_bytes=64 * MB, tcp=True, workers=workers)
        try:
            s.start(make_spawn(args.start_method, started))
            time.sleep(args.io_seconds)
        finally:
            s.stop()
            reap(started)
        st = s.stats()
        rows.append([f"{workers} worker(s)", st["disk_write_mb_s"], st["disk_read_mb_s"], st["disk_mb_s"],
                     st["fsync_write_p50_ms"], st["fsync_write_p99_ms"], st["read_p50_ms"], st["tcp_round_trips_per_s"],
                     st["tcp_mb_s"], st["tcp_rtt_p50_ms"], st["tcp_rtt_p99_ms"], st["verify_errors"]])
    table(f"I/O: {args.io_seconds:g} s, 4 MB files (write+fsync, page cache dropped, read back, verified), "
          f"16 KB TCP echo blocks on 127.0.0.1",
          ["run", "write MB/s", "read MB/s", "loop MB/s", "fsync-write p50 ms", "p99 ms", "read p50 ms",
           "TCP rt/s", "TCP MB/s each way",
           "RTT p50 ms", "RTT p99 ms", "verify errors"],
          rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["cpu", "memory", "io"], action="append",
                    help="run only this part (repeatable); default: all")
    ap.add_argument("--loads", type=lambda t: [float(x) for x in t.split(",")], default=[50.0, 90.0],
                    help="CPU loads in percent, comma-separated (default 50,90)")
    ap.add_argument("--seconds", type=int, default=10, help="CPU: number of 1 s readings (default 10)")
    ap.add_argument("--io-seconds", type=float, default=5.0, help="I/O: run length per configuration (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="memory runs (default 3)")
    ap.add_argument("--huge-pages", action="store_true", help="memory: ask for transparent huge pages")
    ap.add_argument("--io-workers", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2])
    ap.add_argument("--start-method", choices=["fork", "spawn", "forkserver"], default="fork")
    ap.add_argument("--no-stress-ng", action="store_true", help="skip the stress-ng baseline")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every reading")
    args = ap.parse_args(argv)
    parts = args.only or ["cpu", "memory", "io"]
    print(f"machine: {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / MB / 1024:.1f} GiB; "
          f"load average {os.getloadavg()[0]:.2f} before the run (shared machines make these figures noisy)")
    if "cpu" in parts:
        run_cpu(args)
    if "memory" in parts:
        run_memory(args)
    if "io" in parts:
        run_io(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
