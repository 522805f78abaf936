#!/usr/bin/env bash
# Nightly loadgen suite for cron: one run directory per night, compared with the previous one.
#
#   LOADGEN_ROOT=/var/tmp/loadgen-nightly   where run directories live (ROOT/<UTC stamp>/, ROOT/latest)
#   LOADGEN_KEEP=14                         run directories kept (older ones are removed)
#   LOADGEN_PROFILE=nightly                 suite profile: ci, standard or nightly
#   LOADGEN_PYTHON=python3                  the Python that has loadgen installed
#   LOADGEN_TOLERANCE=10                    compare: allowed change in percent before a regression
#   LOADGEN_ARGS=                           more suite arguments, split on spaces (e.g. --only concurrent_load)
#   LOADGEN_VERBOSE=0                       1: also print the summary line when all is well
#
# Quiet for cron mail: nothing on stdout when the suite passed without regression; otherwise each
# failed component with its failed criteria and what they measured, the suite's last lines (its
# summary line, or what a dying suite said) and the comparison table. Exit code: the suite's (DESIGN §10: 0, 1, 2, 3,
# 130, 143); when the suite passed, compare's 1 on a regression; 75 when another run holds the lock.
# Whatever happens, the run directory keeps nightly.log (suite output) and compare.txt; a suite that
# died without its reports gets them rebuilt from its streams (`loadgen report`).
set -u -o pipefail

root=${LOADGEN_ROOT:-/var/tmp/loadgen-nightly}
keep=${LOADGEN_KEEP:-14}
profile=${LOADGEN_PROFILE:-nightly}
python=${LOADGEN_PYTHON:-python3}
tolerance=${LOADGEN_TOLERANCE:-10}
verbose=${LOADGEN_VERBOSE:-0}
read -r -a extra <<<"${LOADGEN_ARGS:-}"

EX_LOCKED=75  # EX_TEMPFAIL: try again later

die() {
    echo "nightly: $*" >&2
    exit 2
}

# "FAIL NAME — CRITERION failed (measured VALUE); …", one line per failed component: from the report's
# summary (also there when the reports were rebuilt from the streams), else from the suite's output.
failed_components() {
    local txt
    for txt in "$run_dir/ai_writing_flow_v2_heavy_load_stress_report.txt" "$run_dir/summary.txt"; do
        if [ -f "$txt" ]; then
            grep -E '^FAIL ' -- "$txt"
            return 0
        fi
    done
    grep -E '^FAIL ' -- "$run_dir/nightly.log"
    return 0
}

case $keep in
    '' | *[!0-9]* | 0) die "LOADGEN_KEEP must be a whole number ≥ 1, got '$keep'" ;;
esac
mkdir -p -- "$root" || die "cannot create LOADGEN_ROOT '$root'"

# One run at a time: the lock lives as long as this shell (fd 9).
exec 9>"$root/.lock" || die "cannot open the lock file $root/.lock"
if ! flock -n 9; then
    echo "nightly: another run holds $root/.lock; not starting a second one" >&2
    exit "$EX_LOCKED"
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
name=$stamp
n=1
while [ -e "$root/$name" ]; do # two runs within one second
    n=$((n + 1))
    name="$stamp-$n"
done
run_dir="$root/$name"
mkdir -- "$run_dir" || die "cannot create $run_dir"

previous=""
if [ -L "$root/latest" ]; then
    previous=$(readlink -- "$root/latest")
    case $previous in
        /*) ;;
        *) previous="$root/$previous" ;;
    esac
    [ -d "$previous" ] || previous=""
fi

"$python" -m loadgen suite --profile "$profile" --quiet --out "$run_dir" "${extra[@]}" >"$run_dir/nightly.log" 2>&1
suite_rc=$?

# A master that died (OOM kill, crash) wrote no report: rebuild it from the streams, so this run
# still has report.html and junit.xml, and tomorrow's comparison has a baseline.
if ! compgen -G "$run_dir/*report.json" >/dev/null && [ -s "$run_dir/events.jsonl" ]; then
    echo "nightly: the suite wrote no report (exit $suite_rc); rebuilding it from the streams" >>"$run_dir/nightly.log"
    "$python" -m loadgen report "$run_dir" >>"$run_dir/nightly.log" 2>&1
    [ "$suite_rc" -ne 0 ] || suite_rc=1
fi

# latest → this run (relative, so the root can move), swapped in atomically.
ln -sfn -- "$name" "$root/.latest.tmp" && mv -Tf -- "$root/.latest.tmp" "$root/latest"

compare_rc=0
if [ -n "$previous" ]; then
    "$python" -m loadgen compare "$previous" "$run_dir" --tolerance "$tolerance" >"$run_dir/compare.txt" 2>&1
    compare_rc=$?
else
    echo "no previous run to compare with" >"$run_dir/compare.txt"
fi

# Keep the newest $keep run directories (names sort by time).
mapfile -t runs < <(find "$root" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z*' -printf '%f\n' | LC_ALL=C sort)
excess=$((${#runs[@]} - keep))
for ((i = 0; i < excess; i++)); do
    rm -rf -- "${root:?}/${runs[$i]}"
done

rc=$suite_rc
if [ "$suite_rc" -eq 0 ] && [ "$compare_rc" -eq 1 ]; then
    rc=1
fi
if [ "$rc" -ne 0 ] || [ "$compare_rc" -ne 0 ] || [ "$verbose" = 1 ]; then
    echo "nightly: $run_dir: suite exit $suite_rc, compare exit $compare_rc${previous:+ (against $previous)}"
    failed_components
    grep -vE '^FAIL ' -- "$run_dir/nightly.log" | tail -n 5
    if [ "$compare_rc" -ne 0 ]; then
        cat -- "$run_dir/compare.txt"
    fi
fi
exit "$rc"
