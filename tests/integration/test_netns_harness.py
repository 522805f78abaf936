"""The multi-host harness (tests/_netns.py): a Dask scheduler on the host, a worker in each network
namespace on a private bridge, link faults, and a teardown that leaves nothing. Root on Linux only."""

import os
import socket
import subprocess
import sys

import pytest
from _helpers import wait_for
from _netns import NetFleet, netns_or_skip, sweep_stale


def _links():
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def _netns_list():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _connects(host, port):
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def assert_gone(fleet):
    assert fleet.close_errors == []
    assert fleet.processes_left() == []
    listed = _netns_list()
    assert not [n for n in fleet.names if n in listed]
    links = _links()
    assert fleet.bridge not in links
    assert not [fleet.host_veth(i) for i in range(len(fleet.names)) if fleet.host_veth(i) in links]


def test_workers_in_namespaces_reach_the_host_scheduler_and_a_link_fault_cuts_one_off():
    netns_or_skip()
    from distributed import Client

    with NetFleet(2) as fleet:
        assert fleet.ips == [str(fleet.subnet.network_address + k) for k in (10, 11)]
        fleet.start_scheduler()
        assert fleet.scheduler_address.startswith(f"tcp://{fleet.host_ip}:")
        procs = fleet.start_workers()
        assert len(fleet.wait_for_workers(2, timeout=60)) == 2
        assert [p.pid for p in procs] == [fleet.worker_pids(i)[0] for i in range(2)]  # ip netns exec execs
        with Client(fleet.scheduler_address, set_as_default=False, timeout=30) as client:
            assert len(client.run(socket.gethostname)) == 2
            addresses = client.run(lambda dask_worker: dask_worker.address)
            names = client.run(lambda dask_worker: dask_worker.name)
        hosts = sorted(a.rsplit("/", 1)[1].rsplit(":", 1)[0] for a in addresses.values())
        assert hosts == fleet.ips
        assert sorted(names.values()) == ["stack0", "stack1"]

        addr = next(a for a in addresses if f"//{fleet.ips[1]}:" in a)
        port = int(addr.rsplit(":", 1)[1])
        assert _connects(fleet.ips[1], port)
        fleet.link_down(1)
        assert not _connects(fleet.ips[1], port)
        fleet.link_up(1)
        assert wait_for(lambda: _connects(fleet.ips[1], port), timeout=10)
        assert len(fleet.processes_left()) == 2
    assert_gone(fleet)
    fleet.close()  # idempotent
    assert fleet.close_errors == []


def test_an_exception_in_the_block_still_tears_everything_down():
    netns_or_skip()
    with pytest.raises(ZeroDivisionError), NetFleet(1) as fleet:
        fleet.start_scheduler()
        fleet.start_worker(0, nanny=True)  # a nanny, its worker (and a resource tracker)
        fleet.wait_for_workers(1, timeout=60)
        assert len(fleet.worker_pids(0)) >= 2
        _ = 1 / 0
    assert fleet.scheduler_proc.poll() is not None
    assert_gone(fleet)


def test_stale_namespaces_of_a_dead_pid_are_swept():
    netns_or_skip()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    name = f"lgt-{dead.pid}-0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in sweep_stale()
        assert name not in _netns_list()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    assert f"lgt-{os.getpid()}-" not in _netns_list()
