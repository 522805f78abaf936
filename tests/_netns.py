"""A multi-host harness for fleet tests: Linux network namespaces joined by a bridge (root only).

``NetFleet(n)`` builds, in the root network namespace, a bridge ``lgbr<pid>`` holding ``X.1/24`` of a
private /24 that overlaps no address or route of the machine, and ``n`` namespaces ``lgt-<pid>-<i>``,
each with a veth pair: ``lgv<pid>-<i>`` on the bridge in the root namespace, ``eth0`` (``X.(10+i)/24``)
inside. The Dask scheduler runs on the host stack (on ``X.1``), one Dask worker per namespace, like
load-test machines behind their own NICs; faults are a link down (``link_down``) or netem delay/loss
(``netem``). Nothing else is touched: no global sysctl, no route, no other interface. ``close()``
(also on ``__exit__`` and at exit) kills every process of every namespace and deletes what was built;
``sweep_stale()`` (run by every ``NetFleet``) deletes what a dead pytest process left.

Importable as ``_netns`` (tests/ is on ``sys.path``); tests skip with ``netns_or_skip()``.
"""

import atexit
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

log = logging.getLogger(__name__)

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
NETNS_DIR = "/run/netns"  # where ``ip netns`` keeps its namespaces (iproute2's NETNS_RUN_DIR)
NS_RE = re.compile(r"^lgt-(\d+)-(.+)$")
BRIDGE_RE = re.compile(r"^lgbr(\d+)$")
VETH_RE = re.compile(r"^lgv(\d+)-(\d+)$")
LOGDIR_RE = re.compile(r"^lgnetns-(\d+)-")  # the fleet's log folder in the temporary directory
FIRST_HOST = 10  # stack i is X.(10+i)
MAX_STACKS = 254 - FIRST_HOST
IP_TIMEOUT = 10.0

DASK_ENV = {
    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": "False",
}

_available = None
_netem = None  # None: not probed yet
_live = None  # the NetFleet of this process that is not closed yet (one at a time: names carry the pid)
_lock = threading.Lock()


class NetnsError(RuntimeError):
    """The harness could not build (or check) its network."""


# ---------------------------------------------------------------- ip


def _ip(*args, check=True, timeout=IP_TIMEOUT):
    """``ip args``: its stdout; a failure raises NetnsError with ip's message (unless ``check=False``)."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       check=False)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout if r.returncode == 0 else None


def _links():
    out = _ip("-j", "link", "show", check=False)
    try:
        return [link["ifname"] for link in json.loads(out or "[]")]
    except ValueError:
        return []


def _namespaces():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except OSError:
        return []


def _ns_pids(name):
    out = _ip("netns", "pids", name, check=False)
    return [int(x) for x in (out or "").split() if x.isdigit()]


def _ns_inode(name):
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


def _pids_in_inodes(inodes):
    """{pid: inode} of the live processes whose network namespace is one of ``inodes`` (found after
    ``ip netns del`` too: a namespace lives on while a process is in it)."""
    found = {}
    want = {f"net:[{ino}]": ino for ino in inodes if ino}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{d}/ns/net")
        except OSError:
            continue  # gone, or a zombie (it has no namespace any more)
        if link in want:
            found[int(d)] = want[link]
    return found


def _describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
    if state in ("Z", "X"):
        return None
    return f"pid {pid}: {cmd or '?'}"


def _reap(pids):
    """Collect the exit status of those of ``pids`` that are this process's children and dead
    (orphans reparented to a subreaper pytest); never a pid a Popen owns (the caller waits those)."""
    me = os.getpid()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if rest[0] == "Z" and int(rest[1]) == me:
                os.waitpid(pid, os.WNOHANG)
        except (OSError, ValueError, IndexError, ChildProcessError):
            continue


def _kill_pids(pids, timeout=5.0, exclude=()):
    """SIGKILL ``pids``, reap our dead children among them (not ``exclude``), until gone or ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        _reap([p for p in pids if p not in exclude])
        left = [p for p in pids if _describe(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _killpg(pgid):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _proc_start(pid):
    """Start time of ``pid`` (seconds since the epoch), or None when it is not alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        if rest[0] in ("Z", "X"):
            return None
        ticks = int(rest[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _owner_gone(pid, since=None):
    """True when the process ``pid`` that created a namespace/bridge is no more: dead, a reused pid (it
    started after ``since``), or this very process with no live NetFleet."""
    if pid == os.getpid():
        return _live is None
    start = _proc_start(pid)
    if start is None:
        return True
    return since is not None and start > since + 2.0


@contextlib.contextmanager
def _global_lock():
    """Serialise subnet choice and the sweep between processes (pytest-xdist, two sessions)."""
    d = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    with open(os.path.join(d, "loadgen-netns.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- availability


def netns_available():
    """(True, "") when namespaces, veths and bridges can be made here: root on Linux with ``ip``, and a
    probe namespace (with a veth pair and a bridge inside it, never in the root namespace) was created
    and deleted. Cached."""
    global _available
    if _available is not None:
        return _available
    if not sys.platform.startswith("linux"):
        _available = (False, "network namespaces need Linux")
    elif os.geteuid() != 0:
        _available = (False, "network namespaces need root")
    elif not shutil.which("ip"):
        _available = (False, "the 'ip' command (iproute2) is not installed")
    else:
        name = f"lgt-{os.getpid()}-probe"
        try:
            _ip("netns", "del", name, check=False)
            _ip("netns", "add", name)
            try:
                _ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
                _ip("-n", name, "link", "add", "pbr", "type", "bridge")
                _ip("-n", name, "link", "set", "p0", "master", "pbr")
                _ip("-n", name, "link", "set", "lo", "up")
            finally:
                _ip("netns", "del", name)
            _available = (True, "")
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            _available = (False, f"cannot create a network namespace with a veth pair and a bridge: {e}")
    return _available


def netns_or_skip():
    """Skip the calling test unless the harness can run here."""
    import pytest

    ok, why = netns_available()
    if not ok:
        pytest.skip(why)


# ---------------------------------------------------------------- stale sweep


def sweep_stale():
    """Delete what a dead process left: namespaces ``lgt-<pid>-*`` (their processes killed first),
    veths ``lgv<pid>-*``, bridges ``lgbr<pid>`` and log folders ``<tmp>/lgnetns-<pid>-*`` of a pid no
    longer alive (or reused since). Returns the names removed."""
    removed = []
    with _global_lock():
        for name in _namespaces():
            m = NS_RE.match(name)
            if not m:
                continue
            try:
                since = os.stat(os.path.join(NETNS_DIR, name)).st_ctime
            except OSError:
                continue
            if not _owner_gone(int(m.group(1)), since):
                continue
            _kill_pids(_ns_pids(name), timeout=3.0)
            if _ip("netns", "del", name, check=False) is not None:
                removed.append(name)
        links = _links()
        for name in links:
            m = VETH_RE.match(name) or BRIDGE_RE.match(name)
            if m and _owner_gone(int(m.group(1))) and _ip("link", "del", name, check=False) is not None:
                removed.append(name)
        tmp = tempfile.gettempdir()
        for name in os.listdir(tmp):
            m = LOGDIR_RE.match(name)
            if m and int(m.group(1)) != os.getpid() and _owner_gone(int(m.group(1))):
                shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
                removed.append(os.path.join(tmp, name))
    if removed:
        log.warning("netns harness: removed stale %s", ", ".join(removed))
    return removed


# ---------------------------------------------------------------- subnet


def _used_networks():
    nets = []
    for args in (("-4", "-j", "addr"), ("-4", "-j", "route", "show", "table", "all")):
        try:
            data = json.loads(_ip(*args, check=False) or "[]")
        except ValueError:
            continue
        for item in data:
            for a in item.get("addr_info", ()):
                with contextlib.suppress(ValueError, KeyError):
                    nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
            dst = item.get("dst")
            if dst and dst != "default":
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    return nets


def _candidates():
    first = [ipaddress.ip_network(f"10.213.{k}.0/24") for k in range(256)]
    start = os.getpid() % 256  # two processes start at different places
    yield from first[start:] + first[:start]
    for k in range(200, 256):
        yield ipaddress.ip_network(f"172.31.{k}.0/24")


def _pick_subnet(subnet=None):
    used = _used_networks()
    if subnet is not None:
        net = ipaddress.ip_network(subnet, strict=True)
        if net.version != 4 or net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"subnet must be a private IPv4 /24, not {subnet}")
        clash = sorted({str(u) for u in used if u.overlaps(net)})
        if clash:
            raise NetnsError(f"subnet {net} overlaps {', '.join(clash)} on this machine")
        return net
    for net in _candidates():
        if not any(u.overlaps(net) for u in used):
            return net
    raise NetnsError("no free private /24 in 10.213.0.0/16 or 172.31.200-255.0/24")


# ---------------------------------------------------------------- processes


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


def _pdeathsig():
    """In the child before exec: die with the parent (a killed pytest leaves no scheduler behind;
    ``ip netns exec`` execs, so the worker keeps it)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG


def _env(extra=None):
    env = dict(os.environ)
    env.update(DASK_ENV)
    paths = [ROOT, TESTS] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


def _tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _can_connect(host, port, timeout=1.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- the fleet


class NetFleet:
    """``n_stacks`` network namespaces on a bridge, a Dask scheduler on the host, a worker per namespace.

    Attributes: ``subnet`` (ipaddress network), ``host_ip`` (X.1, on the bridge), ``ips`` (X.10, X.11,
    ... one per stack), ``names`` (namespace names), ``bridge``, ``scheduler_proc`` /
    ``scheduler_address`` (after ``start_scheduler``), ``workers`` ({i: [Popen, ...]}), ``log_dir``.
    """

    def __init__(self, n_stacks, *, subnet=None, keep_logs=False):
        global _live
        if not 1 <= n_stacks <= MAX_STACKS:
            raise ValueError(f"n_stacks must be 1..{MAX_STACKS}")
        ok, why = netns_available()
        if not ok:
            raise NetnsError(why)
        pid = os.getpid()
        self.n = n_stacks
        self.pid = pid
        self.bridge = f"lgbr{pid}"
        self.names = [f"lgt-{pid}-{i}" for i in range(n_stacks)]
        self._veths = [f"lgv{pid}-{i}" for i in range(n_stacks)]
        self._inodes = []
        self._keep_logs = keep_logs
        self.log_dir = None
        self.scheduler_proc = None
        self.scheduler_address = None
        self.workers = {}
        self.close_errors = []
        self._closed = False
        self._popens = []
        with _lock:
            if _live is not None:
                raise RuntimeError("one NetFleet at a time per process (its names carry the pid)")
            sweep_stale()
            _live = self
        atexit.register(self.close)
        try:
            self.log_dir = tempfile.mkdtemp(prefix=f"lgnetns-{pid}-")
            with _global_lock():
                self.subnet = _pick_subnet(subnet)
                hosts = list(self.subnet.hosts())
                self.host_ip = str(hosts[0])
                self.ips = [str(hosts[FIRST_HOST - 1 + i]) for i in range(n_stacks)]
                self._build()
            self._check_connectivity()
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------- building

    def _build(self):
        prefix = self.subnet.prefixlen
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        _ip("link", "set", self.bridge, "addrgenmode", "none", check=False)  # no IPv6 link-local chatter
        _ip("addr", "add", f"{self.host_ip}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for name, veth, ip in zip(self.names, self._veths, self.ips):
            _ip("netns", "add", name)
            self._inodes.append(_ns_inode(name))
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", veth, "addrgenmode", "none", check=False)
            _ip("-n", name, "link", "set", "eth0", "addrgenmode", "none", check=False)
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", name, "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", "eth0", "up")

    def _check_connectivity(self, timeout=10.0):
        """A TCP connect from every namespace to a listener on X.1 (bridge netfilter or a firewall
        could drop it: the harness then fails clearly rather than tests timing out)."""
        with socket.socket() as srv:
            srv.bind((self.host_ip, 0))
            srv.listen(max(8, self.n))
            port = srv.getsockname()[1]
            code = ("import socket,sys,time\n"
                    f"d=time.monotonic()+{timeout - 1.0!r}\n"
                    "while True:\n"
                    f"  try: socket.create_connection(({self.host_ip!r},{port}),1).close(); break\n"
                    "  except OSError:\n"
                    "    if time.monotonic()>d: sys.exit(3)\n"
                    "    time.sleep(0.05)\n")
            probes = [subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-I", "-S", "-c", code],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True) for name in self.names]
            failed = []
            for name, p in zip(self.names, probes):
                try:
                    _, err = p.communicate(timeout=timeout + 5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                if p.returncode != 0:
                    failed.append(f"{name} (exit {p.returncode}{': ' + err.strip() if err.strip() else ''})")
        if failed:
            nf = ""
            with contextlib.suppress(OSError), open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                nf = f.read().strip()
            hint = (" net.bridge.bridge-nf-call-iptables is 1: iptables/nftables rules see the bridged "
                    "traffic and may drop it (the harness does not change global settings)") if nf == "1" else ""
            raise NetnsError(f"no TCP connection from namespace to {self.host_ip}:{port} over bridge "
                             f"{self.bridge}: {', '.join(failed)}.{hint}")

    # -------------------------------------------------------- names

    def host_veth(self, i):
        """The host-side (root namespace) veth of stack ``i``, on the bridge."""
        return self._veths[i]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"NetFleet({self.n}, subnet={getattr(self, 'subnet', None)}, bridge={self.bridge})"

    # -------------------------------------------------------- Dask

    def _popen(self, cmd, logname, env=None, cwd=ROOT):
        path = os.path.join(self.log_dir, logname)
        with open(path, "ab") as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                 env=env, start_new_session=True, preexec_fn=_pdeathsig)  # noqa: PLW1509 - prctl only
        p.log_path = path
        self._popens.append(p)
        return p

    def start_scheduler(self, *, timeout=30.0, dashboard=False, extra_args=(), extra_env=None):
        """Start ``python -m distributed.cli.dask_scheduler`` on ``X.1`` (root namespace, own session);
        wait until it listens. Returns and sets ``scheduler_address`` (``tcp://X.1:PORT``)."""
        if self.scheduler_proc is not None and self.scheduler_proc.poll() is None:
            raise RuntimeError("the scheduler is running already")
        sfile = os.path.join(self.log_dir, "scheduler.json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sfile)
        dash = ["--dashboard", "--dashboard-address", f"{self.host_ip}:0"] if dashboard else ["--no-dashboard"]
        cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", self.host_ip, "--port", "0",
               *dash, "--scheduler-file", sfile, *extra_args]
        p = self._popen(cmd, "scheduler.log", env=_env(extra_env))
        self.scheduler_proc = p
        deadline = time.monotonic() + timeout
        while True:
            address = None
            with contextlib.suppress(OSError, ValueError), open(sfile) as f:
                address = json.load(f)["address"]
            if address:
                host, port = address.rsplit("/", 1)[1].rsplit(":", 1)
                if _can_connect(host, int(port)):
                    self.scheduler_address = address
                    return address
            if p.poll() is not None:
                raise NetnsError(f"the scheduler exited ({p.returncode}):\n{_tail(p.log_path)}")
            if time.monotonic() > deadline:
                raise NetnsError(f"the scheduler did not listen within {timeout}s:\n{_tail(p.log_path)}")
            time.sleep(0.05)

    def start_worker(self, i, *, nanny=False, resources="loadgen=1", nthreads=1, extra_args=(), extra_env=None):
        """Start a Dask worker (``--name stack<i>``) inside namespace ``i`` on ``X.(10+i)``; returns its Popen
        (the worker itself, or its nanny: ``ip netns exec`` execs the command)."""
        if not self.scheduler_address:
            raise RuntimeError("start_scheduler() first")
        local = os.path.join(self.log_dir, f"worker{i}")
        os.makedirs(local, exist_ok=True)
        cmd = ["ip", "netns", "exec", self.names[i], sys.executable, "-m", "distributed.cli.dask_worker",
               self.scheduler_address, "--host", self.ips[i], "--nthreads", str(nthreads), "--memory-limit", "0",
               "--no-dashboard", "--name", f"stack{i}", "--local-directory", local]
        if resources:
            cmd += ["--resources", resources]
        if not nanny:
            cmd.append("--no-nanny")
        cmd += list(extra_args)
        p = self._popen(cmd, f"worker{i}.log", env=_env(extra_env))
        self.workers.setdefault(i, []).append(p)
        return p

    def start_workers(self, **kw):
        """A worker in every namespace; their Popens."""
        return [self.start_worker(i, **kw) for i in range(self.n)]

    def wait_for_workers(self, n, timeout=60.0):
        """Until the scheduler has ``n`` workers (a Client, closed after); their addresses. Raises with
        the logs when a worker exits first or on timeout."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.scheduler_address, timeout=timeout, set_as_default=False) as client:
            while True:
                workers = list(_scheduler_workers(client))
                if len(workers) >= n:
                    return sorted(workers)
                latest = [ps[-1] for ps in self.workers.values()]
                dead = [p for p in latest if p.poll() is not None]
                if dead and len(latest) - len(dead) < n:
                    raise NetnsError("worker(s) exited before joining:\n" + "\n".join(
                        f"--- {p.log_path} (exit {p.returncode})\n{_tail(p.log_path)}" for p in dead))
                if time.monotonic() > deadline:
                    raise NetnsError(f"{len(workers)} of {n} workers after {timeout}s:\n" + self.logs())
                time.sleep(0.1)

    def logs(self, lines=40):
        """The tails of the scheduler's and workers' logs, for a failure message."""
        parts = []
        for name in sorted(os.listdir(self.log_dir)) if self.log_dir and os.path.isdir(self.log_dir) else ():
            if name.endswith(".log"):
                parts.append(f"--- {name}\n{_tail(os.path.join(self.log_dir, name), lines)}")
        return "\n".join(parts)

    # -------------------------------------------------------- processes

    def worker_pids(self, i):
        """Pids of every process in namespace ``i`` (``ip netns pids``)."""
        if self.names[i] in _namespaces():
            return _ns_pids(self.names[i])
        return sorted(pid for pid, ino in _pids_in_inodes([self._inodes[i]]).items()) \
            if i < len(self._inodes) else []

    def processes_left(self):
        """Descriptions of the processes still alive in any of the namespaces (deleted ones too)."""
        inodes = [ino for ino in self._inodes if ino]
        found = _pids_in_inodes(inodes)
        for name in self.names:  # and by name, should an inode be unknown
            if name in _namespaces():
                found.update({pid: None for pid in _ns_pids(name) if pid not in found})
        where = {ino: name for name, ino in zip(self.names, self._inodes)}
        out = []
        for pid in sorted(found):
            d = _describe(pid)
            if d:
                out.append(f"{where.get(found[pid], 'netns')}: {d}")
        return out

    # -------------------------------------------------------- faults

    def link_down(self, i):
        """Unplug stack ``i``: its host-side veth down (the namespace's eth0 loses carrier)."""
        _ip("link", "set", self._veths[i], "down")

    def link_up(self, i):
        _ip("link", "set", self._veths[i], "up")

    def netem(self, i, delay_ms=0, loss_pct=0):
        """Delay and/or drop stack ``i``'s traffic both ways (netem on the host veth and on eth0 inside:
        a round trip gets twice ``delay_ms``). False, changing nothing, when tc or netem is missing."""
        global _netem
        if _netem is False:
            return False
        if not shutil.which("tc"):
            _netem = False
            return False
        spec = ["netem"]
        if delay_ms:
            spec += ["delay", f"{float(delay_ms)}ms"]
        if loss_pct:
            spec += ["loss", f"{float(loss_pct)}%"]
        for prefix in ([], ["ip", "netns", "exec", self.names[i]]):
            dev = "eth0" if prefix else self._veths[i]
            r = subprocess.run(prefix + ["tc", "qdisc", "replace", "dev", dev, "root", *spec],
                               capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
            if r.returncode != 0:
                err = r.stderr.strip()
                if _netem is None and re.search(r"unknown|not supported|No such file|Operation not", err, re.IGNORECASE):
                    _netem = False
                    log.info("netem unavailable: %s", err)
                    self.clear_netem(i)
                    return False
                raise NetnsError(f"tc qdisc replace dev {dev} root {' '.join(spec)}: {err}")
            _netem = True
        return True

    def clear_netem(self, i):
        """Remove stack ``i``'s netem qdiscs (both sides); no error when there are none."""
        for prefix, dev in (([], self._veths[i]), (["ip", "netns", "exec", self.names[i]], "eth0")):
            if shutil.which("tc"):
                subprocess.run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=IP_TIMEOUT, check=False)

    # -------------------------------------------------------- teardown

    def close(self):
        """Kill every process of every namespace and every Popen of ours, delete the veths, namespaces and
        bridge. Idempotent; never raises (failures are logged and kept in ``close_errors``)."""
        global _live
        if self._closed:
            return
        self._closed = True

        def step(what, fn, *a):
            try:
                return fn(*a)
            except BaseException as e:  # noqa: BLE001 - a teardown must go on
                self.close_errors.append(f"{what}: {e!r}")
                log.warning("netns harness close: %s: %r", what, e)

        ours = {p.pid for p in self._popens}
        for p in self._popens:
            step(f"kill group {p.pid}", _killpg, p.pid)
        inside = step("list processes", lambda: set(_pids_in_inodes(self._inodes)) |
                      {pid for name in self.names if name in _namespaces() for pid in _ns_pids(name)}) or set()
        step("kill namespace processes", _kill_pids, sorted(inside), 5.0, ours)
        for p in self._popens:
            step(f"wait {p.pid}", p.wait, 5)
        step("reap", _reap, sorted(inside - ours))
        links = step("list links", _links) or []
        for veth in self._veths:
            if veth in links:
                step(f"delete {veth}", _ip, "link", "del", veth)
        for name in self.names:
            if name in _namespaces():
                step(f"delete namespace {name}", _ip, "netns", "del", name)
        if self.bridge in links:
            step(f"delete {self.bridge}", _ip, "link", "del", self.bridge)
        left = step("check", self._leftovers) or []
        if left:
            self.close_errors.append("left: " + ", ".join(left))
            log.warning("netns harness close: left %s", ", ".join(left))
        if not self._keep_logs and self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        with _lock:
            if _live is self:
                _live = None

    def _leftovers(self):
        links = set(_links())
        nss = set(_namespaces())
        return ([n for n in self.names if n in nss] + [v for v in self._veths if v in links]
                + ([self.bridge] if self.bridge in links else []) + self.processes_left())


def _scheduler_workers(client):
    """The scheduler's workers (all of them: newer ``scheduler_info`` lists 5 unless told otherwise)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:
        return client.scheduler_info()["workers"]
