#!/usr/bin/env bash
# Nightly loadgen suite for cron: one run directory per night, judged against the history of every night.
#
#   LOADGEN_ROOT=/var/tmp/loadgen-nightly   where run directories live (ROOT/<UTC stamp>/, ROOT/latest), with
#                                           the history's store (ROOT/history.sqlite) and page (ROOT/history.html)
#   LOADGEN_KEEP=14                         run directories kept whole; older ones keep only their reports
#                                           (report JSON, summary .txt, nightly.log, history.txt): the history
#                                           needs every night, the streams and pages are the bulk (~0.9 MB a night)
#   LOADGEN_PROFILE=nightly                 suite profile: ci, standard or nightly
#   LOADGEN_PYTHON=python3                  the Python that has loadgen installed
#   LOADGEN_ARGS=                           more suite arguments, split on spaces (e.g. --only concurrent_load)
#   LOADGEN_LABEL=                          recorded with the run (e.g. a commit id) and shown beside its night
#   LOADGEN_HISTORY_PROM=                   also write the history's verdict for node_exporter's textfile collector
#   LOADGEN_VERBOSE=0                       1: also print the summary line when all is well
#
# Quiet for cron mail: nothing on stdout unless the suite failed, the history found a new change point
# (each named: component, metric, the night it began, its size), the night began a new series (one line:
# what changed), or the history could not be judged. Then: each failed component with its failed criteria
# and what they measured, the suite's last lines, and the history's new change points and verdict.
# Exit code: the suite's (DESIGN §10: 0, 1, 2, 3, 130, 143); when the suite passed, `loadgen history`'s
# (1 while the newest night lies in a regressed segment, 2 when nothing could be judged); 75 when another
# run holds the lock. Whatever happens, the run directory keeps nightly.log (suite output) and history.txt;
# a suite that died without its reports gets them rebuilt from its streams (`loadgen report`).
set -u -o pipefail

root=${LOADGEN_ROOT:-/var/tmp/loadgen-nightly}
keep=${LOADGEN_KEEP:-14}
profile=${LOADGEN_PROFILE:-nightly}
python=${LOADGEN_PYTHON:-python3}
history_prom=${LOADGEN_HISTORY_PROM:-}
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

# Judge tonight against every night of its series (the store under the root takes tonight's report first).
history_args=()
[ -z "$history_prom" ] || history_args=(--prom-textfile "$history_prom")
"$python" -m loadgen history "$root" "${history_args[@]}" >"$run_dir/history.txt" 2>&1
history_rc=$?

# Keep the newest $keep run directories whole (names sort by time); older ones keep their reports only,
# which the history reads (`loadgen history --rebuild` loses nothing). One left with no report goes.
mapfile -t runs < <(find "$root" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*T[0-9]*Z*' -printf '%f\n' | LC_ALL=C sort)
excess=$((${#runs[@]} - keep))
for ((i = 0; i < excess; i++)); do
    old="${root:?}/${runs[$i]}"
    find "$old" -mindepth 1 -maxdepth 1 ! -name '*report.json' ! -name '*.txt' ! -name nightly.log -exec rm -rf -- {} +
    compgen -G "$old/*report.json" >/dev/null || rm -rf -- "$old"
done

rc=$suite_rc
if [ "$suite_rc" -eq 0 ] && [ "$history_rc" -ne 0 ]; then
    rc=$history_rc
fi
new_changes=$(grep -E '^NEW ' -- "$run_dir/history.txt")
new_series=$(grep -E '^history: new series: ' -- "$run_dir/history.txt")
if [ "$suite_rc" -ne 0 ] || [ -n "$new_changes" ] || [ "$history_rc" -eq 2 ] || [ "$verbose" = 1 ]; then
    echo "nightly: $run_dir: suite exit $suite_rc, history exit $history_rc"
    if [ "$suite_rc" -ne 0 ]; then
        failed_components
        grep -vE '^FAIL ' -- "$run_dir/nightly.log" | tail -n 5
    fi
    [ -z "$new_changes" ] || printf '%s\n' "$new_changes"
    # the verdict line (and, when the history could not judge, what it said)
    grep -E '^(history: (REGRESSED|FAILED|ok|no verdict)|loadgen: )' -- "$run_dir/history.txt"
elif [ -n "$new_series" ]; then
    echo "nightly: $name ${new_series#history: }"
fi
exit "$rc"
