"""loadgen — a multiprocessing load generator and stress tester for Python workloads.

Public API (the seed's names)::

    from loadgen import (HeavyLoadStressTester, ResourceThresholds, MockAIWritingFlowV2,
                         SystemResourceMonitor, StressTestResult, run)

and, inside an operation, named measurements and checks (``loadgen.named``)::

    with loadgen.measure("llm_call"): ...
    loadgen.check(ok, "has_title")

Imports are lazy so that ``python -m loadgen --help`` stays fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "ResourceThresholds": ("loadgen.config", "ResourceThresholds"),
    "MockAIWritingFlowV2": ("loadgen.workload.flow", "MockAIWritingFlowV2"),
    "SystemResourceMonitor": ("loadgen.engine.monitor_handle", "SystemResourceMonitor"),
    "StressTestResult": ("loadgen.result", "StressTestResult"),
    "HeavyLoadStressTester": ("loadgen.api", "HeavyLoadStressTester"),
    "run": ("loadgen.api", "run"),
    "run_suite": ("loadgen.api", "run_suite"),
    "measure": ("loadgen.named", "measure"),
    "check": ("loadgen.named", "check"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'loadgen' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
