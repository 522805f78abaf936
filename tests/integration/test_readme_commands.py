"""Every ``python -m loadgen`` command in README.rst, as written there: each one parses (its flags and
values are checked as the command line checks them; so does every one in docs/*.rst), and each README
command that runs on this machine runs (the
example plans: test_examples.py; a Dask cluster: test_fleet.py) —
shortened (durations 1 s, the suite one scenario), its placeholders (``my_module:op``, ``RUN_DIR``,
``plan.toml``, …) made real — and exits as a run that measured, never with a usage error. When the
docs drift from the code, this fails."""

import os
import re
import shlex
import shutil

import pytest

from _helpers import ROOT, start_serve

README = os.path.join(ROOT, "README.rst")
PLACEHOLDER_TARGETS = {"mypkg.client:call": "_targets:sleep_ms", "my_module:op": "_targets:sleep_ms",
                       "mypkg.aclient:call": "_targets:asleep"}
NOT_HERE = ("--cluster", "cluster", "serve")  # a Dask cluster, a server: parsed, run by their own tests
README_SERVE = "http://127.0.0.1:8080"  # where the README's --url commands find `loadgen serve`


def readme_commands(path=README):
    """``(line, argv)`` of every loadgen command of the README (or another page): code-block lines and
    inline literals."""
    text = open(path, encoding="utf-8").read()
    found = []
    for line in text.splitlines():
        if line.startswith("   ") and "-m loadgen " in line and "``" not in line:
            found.append(line.strip().split("&&")[-1].strip())
    found += re.findall(r"``(python3? -m loadgen [^`]+)``", text)
    out = {}
    for cmd in found:
        argv = shlex.split(cmd, comments=True)
        argv = argv[argv.index("loadgen") + 1:]
        if argv and argv[-1] == "&":  # started in the background
            argv = argv[:-1]
        argv = [a.split("|")[0] if "|" in a and not a.startswith(("tcp:", "p")) else a for a in argv]  # ci|standard
        out.setdefault(tuple(argv), cmd)
    return [(cmd, list(argv)) for argv, cmd in out.items()]


COMMANDS = readme_commands()
DOCS = os.path.join(ROOT, "docs")
# docs/*.rst: parsed, not run (the README's first-hour commands run; these are the reference's examples)
DOCS_COMMANDS = [(f"{name}: {cmd}", argv) for name in sorted(os.listdir(DOCS)) if name.endswith(".rst")
                 for cmd, argv in readme_commands(os.path.join(DOCS, name))]


def test_the_readme_has_the_commands_this_test_knows():
    verbs = {argv[0] for _, argv in COMMANDS if argv}
    assert {"list", "run", "suite", "compare", "report", "validate", "cluster", "--help"} <= verbs
    assert len(COMMANDS) >= 15


@pytest.mark.parametrize("cmd, argv", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_readme_command_parses(cmd, argv):
    from loadgen import cli, options as opts

    if "--help" in argv:
        return  # runs below
    args = cli.build_parser().parse_args(_real(argv, "/tmp/x", {}))
    if getattr(args, "command", None) in ("run", "suite"):
        opts.from_flags(vars(args))  # every value checked as the command line checks it


def test_the_docs_have_commands_too():
    assert len(DOCS_COMMANDS) >= 15, DOCS_COMMANDS


@pytest.mark.parametrize("cmd, argv", DOCS_COMMANDS, ids=[c for c, _ in DOCS_COMMANDS])
def test_every_docs_command_parses(cmd, argv):
    test_every_readme_command_parses(cmd, argv)


def _real(argv, tmp, made):
    out = []
    for a in argv:
        a = PLACEHOLDER_TARGETS.get(a, a)
        if a in ("BASELINE", "RUN_DIR"):
            a = made.get("run_a", a)
        elif a == "CURRENT":
            a = made.get("run_b", a)
        elif a == "plan.toml":
            a = made.get("plan", a)
        elif a == "ROOT":  # `loadgen history ROOT`: a nightly root of run directories
            a = made.get("root", a)
        out.append(a)
    return out


def _shorten(argv, tmp, i):
    """The command with a short duration, its own run directory and (a suite) one scenario."""
    argv = list(argv)
    if argv[0] not in ("run", "suite") or "--help" in argv:
        return argv
    if "--profile" in argv:  # standard and nightly run for minutes: what they run is the ci profile's, longer
        argv[argv.index("--profile") + 1] = "ci"
    if "--stages" in argv:
        argv[argv.index("--stages") + 1] = "300ms:2,400ms:4,300ms:0"
    elif "--config" not in argv and argv[0] == "run":
        if "--duration" in argv:
            argv[argv.index("--duration") + 1] = "1s"
        else:
            argv += ["--duration", "1s"]
    if "--out" in argv:
        argv[argv.index("--out") + 1] = os.path.join(tmp, f"out{i}")
    else:
        argv += ["--out", os.path.join(tmp, f"out{i}")]
    if argv[0] == "suite":
        argv += ["--only", "concurrent_load"]
    return argv + ["--quiet", "--max-cpu-percent", "100"]


@pytest.mark.slow
def test_every_readme_command_runs(cli, tmp_path):
    tmp = str(tmp_path)
    made = {}
    # What the placeholders stand for: two runs to compare and rebuild, a plan.
    for key in ("run_a", "run_b"):
        code, out, err = cli.run("run", "--target", "_targets:sleep_ms", "--duration", "1s", "--out", key, "--quiet")
        assert code == 0, err
        made[key] = os.path.join(tmp, key)
    (tmp_path / "plan.toml").write_text('[[scenario]]\nname = "load"\ntarget = "_targets:sleep_ms"\nduration = "1s"\n')
    made["plan"] = str(tmp_path / "plan.toml")
    for key in ("run_a", "run_b"):
        shutil.copytree(made[key], tmp_path / "root" / key)
    made["root"] = str(tmp_path / "root")
    served = start_serve(cli)  # the README's `loadgen serve --port 8080`, on a free port
    runs = []
    for i, (cmd, argv) in enumerate(COMMANDS):
        if any(a in NOT_HERE for a in argv) or any(a.startswith("--cluster") for a in argv):
            continue
        if any(a.startswith("examples/") and a.endswith(".toml") for a in argv):
            continue  # test_examples.py runs every example plan
        argv = _shorten(_real(argv, tmp, made), tmp, i)
        argv = [a.replace(README_SERVE, served.url) for a in argv]
        argv = [os.path.join(ROOT, a) if a.startswith("examples/") else a for a in argv]
        argv = [a.replace("examples/", os.path.join(ROOT, "examples") + "/") if ".py:" in a and not
                os.path.isabs(a) else a for a in argv]
        runs.append((cmd, argv))
    # Three at a time: each only has to end as a run that measured (0, or 1 for a verdict), not a
    # usage error; a compare of two 1-second runs may well call a difference a regression (exit 1).
    for k in range(0, len(runs), 3):
        batch = [(cmd, argv, cli.start(*argv)) for cmd, argv in runs[k:k + 3]]
        for cmd, argv, p in batch:
            out, err = p.communicate(timeout=180)
            assert p.returncode in (0, 1), f"{cmd}\n  ran as: {' '.join(argv)}\n  exit {p.returncode}: {err.strip()[-500:]}"
    assert len(runs) >= 11, runs
