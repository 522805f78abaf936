#!/usr/bin/env bash
# Soak: run a sustained flow for a long time and record the generator's own health over time.
#
#   scripts/soak.sh [DURATION] [OUT_DIR]        e.g. scripts/soak.sh 8h /var/tmp/soak
#
# Runs `python -m loadgen run sustained_load` on the embedded flow (concurrency 20) for DURATION
# (default 30m) and samples the master process every SOAK_EVERY seconds (default 10): its RSS (kB)
# and open file descriptors, and the number of loadgen processes. Writes OUT_DIR/soak.csv and
# prints a summary: RSS and fd count after the warm-up (SOAK_WARMUP seconds, default 600; the
# second half of a shorter soak) and at the end, the maximum, and the least-squares RSS slope after
# the warm-up in MB/h (the figure to watch: < 1 MB/h on the embedded flow). Exit code: loadgen's.
set -euo pipefail
duration=${1:-30m}
out=${2:-soak-$(date -u +%Y%m%dT%H%M%SZ)}
every=${SOAK_EVERY:-10}
warmup=${SOAK_WARMUP:-600}
python=${LOADGEN_PYTHON:-python3}
concurrency=${SOAK_CONCURRENCY:-20}
mkdir -p "$out"
csv="$out/soak.csv"
echo "t,elapsed_s,rss_kb,fds,loadgen_processes" > "$csv"

# The run's own hard bound must outlast the soak.
"$python" -m loadgen run sustained_load --duration "$duration" --concurrency "$concurrency" \
  --max-execution-time 48h --out "$out/run" --quiet "${@:3}" &
pid=$!
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  if [ -r "/proc/$pid/status" ]; then
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    procs=$(pgrep -c -s "$(ps -o sid= -p "$pid" | tr -d ' ')" 2>/dev/null || echo 0)
    [ -n "$rss" ] && echo "$(date +%s),$(( $(date +%s) - start )),$rss,$fds,$procs" >> "$csv"
  fi
  sleep "$every"
done
set +e
wait "$pid"
code=$?
set -e
"$python" - "$csv" "$warmup" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1]))]
rows = [{k: float(v) for k, v in r.items()} for r in rows]
if len(rows) < 3:
    print("soak: too few samples"); sys.exit(0)
warmup = float(sys.argv[2])
if rows[-1]["elapsed_s"] < 2 * warmup:  # a short soak: its second half
    warmup = rows[-1]["elapsed_s"] / 2
warm = [r for r in rows if r["elapsed_s"] >= warmup] or rows
first, last = warm[0], warm[-1]
n = len(warm)
mt = sum(r["elapsed_s"] for r in warm) / n
mv = sum(r["rss_kb"] for r in warm) / n
den = sum((r["elapsed_s"] - mt) ** 2 for r in warm) or 1.0
slope = sum((r["elapsed_s"] - mt) * (r["rss_kb"] - mv) for r in warm) / den
print(f"soak: {last['elapsed_s'] / 60:.1f} min, {len(rows)} samples")
print(f"  master RSS  after {warmup / 60:.0f} min of warm-up {first['rss_kb'] / 1024:.1f} MB, end {last['rss_kb'] / 1024:.1f} MB, "
      f"max {max(r['rss_kb'] for r in rows) / 1024:.1f} MB, slope {slope * 3600 / 1024:+.2f} MB/h")
print(f"  master fds  after warm-up {first['fds']:.0f}, end {last['fds']:.0f}, max {max(r['fds'] for r in rows):.0f}")
print(f"  processes   {min(r['loadgen_processes'] for r in rows):.0f}–{max(r['loadgen_processes'] for r in rows):.0f}")
PY
echo "soak: loadgen exited $code; samples in $csv, run in $out/run"
exit "$code"
