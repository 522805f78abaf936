"""The embedded flow as a ``--target`` for ``benchmarks/history.py --real``: its LLM waits scaled by
``LOADGEN_BENCH_SLOWDOWN`` (1.10: 10 % slower). The settings a report records (the target's name, its
arguments) stay the same whatever the factor — as a code change would, not a settings change."""

import os

from loadgen.workload.flow import FLOW_PARAMS, MockAIWritingFlowV2

_flow = None


def kickoff(inputs=None):
    """One kickoff of a per-process flow, its ``processing_time_base`` times the slowdown."""
    global _flow
    if _flow is None:
        factor = float(os.environ.get("LOADGEN_BENCH_SLOWDOWN", "1.0"))
        _flow = MockAIWritingFlowV2(processing_time_base=FLOW_PARAMS["processing_time_base"][1] * factor)
    return _flow.kickoff(inputs)
