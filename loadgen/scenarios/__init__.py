"""The seed's stress categories, one module each, behind one registry.

A scenario is a small class: a name, what it does, its default criteria
(the seed's), and ``run(session) -> StressTestResult``. It runs one or more
phases (``session.run_phase``), each a complete :class:`~loadgen.engine.runner.Runner` run
whose streams land in the same run directory, tagged with the phase.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError

# name → module: imported only when the scenario is used.
_MODULES = {
    "concurrent_load": "concurrent_load",
    "memory_pressure": "memory_pressure",
    "cpu_saturation": "cpu_saturation",
    "io_stress": "io_stress",
    "sustained_load": "sustained_load",
    "capacity_limits": "capacity_limits",
    "recovery": "recovery",
    "circuit_breaker": "circuit_breaker",
}
# Run by name only, never by the suite: exactly the load asked (``run --target`` without a scenario).
_PLAIN = {"load": "load"}
LOAD = "load"


def names():
    """Every scenario's name, in the suite's order."""
    return list(_MODULES)


def get(name):
    """The scenario class called ``name`` (a suite scenario, or ``load``); :class:`UsageError` for an
    unknown one."""
    modules = _MODULES | _PLAIN
    if name not in modules:
        raise UsageError(f"unknown scenario {name!r} (known: {', '.join(modules)})")
    module = importlib.import_module(f"{__name__}.{modules[name]}")
    return module.SCENARIO
