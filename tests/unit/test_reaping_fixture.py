"""The strict reaper (tests/_reaping.py) can fail a test: an inner pytest run (pytester, in process)
whose tests leave ``sleep 30`` behind, as a direct child and as a grandchild detached by ``setsid`` and
orphaned by its parent's exit (found because pytest is the child subreaper). The inner tests pass;
their teardown errors, naming the survivor, and the survivor is killed and reaped."""

import psutil

INNER = '''
import os
import subprocess

import psutil

PIDS = {pids!r}


def record(kind, pid):
    with open(PIDS, "a") as f:
        f.write(f"{{kind}} {{pid}}\\n")


def test_direct_child():
    p = subprocess.Popen(["sleep", "30"])
    record("child", p.pid)


def test_detached_grandchild():
    # sh, in a session of its own, starts sleep in the background and exits: sleep is orphaned
    out = subprocess.run(["sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"],
                         start_new_session=True, capture_output=True, text=True, timeout=10, check=True)
    pid = int(out.stdout)
    record("grandchild", pid)
    assert psutil.Process(pid).ppid() == os.getpid()  # reparented to pytest, the subreaper, not to init
'''


def test_the_reaper_fails_a_test_that_leaves_a_process_behind(pytester):
    pids = pytester.path / "pids"
    pytester.makepyfile(test_leaky=INNER.format(pids=str(pids)))
    result = pytester.runpytest("-p", "_reaping", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=2)
    recorded = {kind: int(pid) for kind, pid in (line.split() for line in pids.read_text().splitlines())}
    assert set(recorded) == {"child", "grandchild"}
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_direct_child*",
                                 "*ERROR at teardown of test_detached_grandchild*"], consecutive=False)
    out = result.stdout.str()
    for kind, pid in recorded.items():
        assert f"pid {pid} (sleep): sleep 30" in out, (kind, out)
    # nothing left: not running, not a zombie, not reparented anywhere under us
    left = [p for p in psutil.Process().children(recursive=True) if p.pid in recorded.values()]
    assert not left, left
    for pid in recorded.values():
        try:
            assert "sleep" not in psutil.Process(pid).cmdline(), pid
        except psutil.NoSuchProcess:
            pass
