"""MockAIWritingFlowV2: stages, failures, seeds, loops, real CPU/memory, build_flow.

Fast: most flows here do no I/O and little work; the few that sleep or
allocate do so for a fraction of a second.
"""

import collections
import inspect
import math
import pickle
import re
import threading
import time

import psutil
import pytest

from loadgen.workload import flow as flow_mod
from loadgen.errors import UsageError
from loadgen.engine._proc import trim_heap
from loadgen.workload.flow import (
    FLOW_PARAMS,
    STAGES,
    FlowResult,
    MockAIWritingFlowV2,
    build_flow,
    burn_cpu,
    timeout_reason,
    touch_memory,
    wait_overrun_probability,
)

MB = 1 << 20


def idle_flow(**kw):
    """A flow that does no CPU, memory or I/O work unless told to.

    Deadlines off unless told: an idle stage's auto deadline is 10 ms, and a
    10 ms stall of the test process must not fail tests about something else.
    """
    kw.setdefault("stage_cpu_ms", 0)
    kw.setdefault("stage_memory_mb", 0)
    kw.setdefault("stage_io_ms", 0)
    kw.setdefault("stage_timeout_ms", "none")
    return MockAIWritingFlowV2(**kw)


def rss():
    return psutil.Process().memory_info().rss


@pytest.fixture
def sleeps(monkeypatch):
    """Record the simulated LLM waits instead of sleeping them."""
    waits = []
    monkeypatch.setattr(flow_mod.time, "sleep", waits.append)
    return waits


def signature(result):
    return (result.state, result.failed_stage, result.reason, result.style_loops, tuple(sorted(result.output.items())))


# ---------------------------------------------------------------- stages and results


def test_finalized_run_times_every_stage_in_order():
    result = idle_flow(failure_rate=0, seed=1).kickoff({"topic_title": "x"})
    assert isinstance(result, FlowResult)
    assert result.ok and result.state == "finalized"
    assert result.failed_stage is None and result.reason is None
    assert list(result.stage_timings_us) == list(STAGES)
    assert all(isinstance(us, int) and us >= 0 for us in result.stage_timings_us.values())
    assert result.output["topic_title"] == "x"


def test_stage_timings_are_wall_microseconds():
    flow = MockAIWritingFlowV2(
        processing_time_base=0, failure_rate=0, stage_cpu_ms=0, stage_memory_mb=0,
        stage_io_ms={"research": 30}, io_sigma=0, stage_timeout_ms="none",
    )
    result = flow.kickoff()
    assert 30_000 <= result.stage_timings_us["research"] < 30_000 * 3
    assert result.stage_timings_us["quality_check"] < 10_000


@pytest.mark.parametrize("seed", range(20))
def test_failure_is_returned_names_the_stage_and_stops_the_flow(seed):
    result = idle_flow(failure_rate=1, seed=seed).kickoff()
    assert result.state == "failed" and not result.ok
    assert result.failed_stage in STAGES
    assert isinstance(result.reason, str) and result.reason
    assert result.reason.startswith("simulated:") and not result.timed_out  # injected, not a deadline
    last = STAGES.index(result.failed_stage)
    assert list(result.stage_timings_us) == list(STAGES[: last + 1])
    assert result.output == {}


def test_failure_rate_zero_never_fails_and_one_always_fails():
    never, always = idle_flow(failure_rate=0, seed=3), idle_flow(failure_rate=1, seed=3)
    assert all(never.kickoff().ok for _ in range(300))
    failed = [always.kickoff() for _ in range(300)]
    assert all(r.state == "failed" for r in failed)
    # the failing stage is the RNG's choice, not always the same one
    assert {r.failed_stage for r in failed} == set(STAGES)


def test_failure_rate_is_a_rate():
    flow = idle_flow(failure_rate=0.2, seed=11)
    failures = sum(not flow.kickoff().ok for _ in range(1000))
    assert 150 <= failures <= 250


def test_non_mapping_inputs_fail_input_validation_without_raising():
    result = idle_flow(failure_rate=0).kickoff(["not", "a", "mapping"])
    assert result.state == "failed"
    assert result.failed_stage == "input_validation"
    assert "mapping" in result.reason
    assert list(result.stage_timings_us) == ["input_validation"]


# ---------------------------------------------------------------- seeds and loops


def test_same_seed_same_sequence_different_seed_different_sequence(sleeps):
    a, b, c = (MockAIWritingFlowV2(failure_rate=0.3, stage_cpu_ms=0, stage_memory_mb=0, seed=s) for s in (5, 5, 6))
    run_a = [signature(a.kickoff()) for _ in range(60)]
    waits_a = list(sleeps)
    sleeps.clear()
    run_b = [signature(b.kickoff()) for _ in range(60)]
    assert run_a == run_b
    assert sleeps == waits_a  # the LLM waits too
    assert [signature(c.kickoff()) for _ in range(60)] != run_a


def test_failure_rate_does_not_shift_the_other_choices():
    low, high = idle_flow(failure_rate=0, seed=9), idle_flow(failure_rate=0.5, seed=9)
    pairs = [(low.kickoff(), high.kickoff()) for _ in range(100)]
    ok_pairs = [(x, y) for x, y in pairs if y.ok]
    assert ok_pairs
    assert all(x.style_loops == y.style_loops and x.output == y.output for x, y in ok_pairs)


def test_io_waits_are_lognormal_with_the_stage_mean(sleeps):
    flow = MockAIWritingFlowV2(processing_time_base=0.2, failure_rate=0, style_loop_probability=0,
                               stage_cpu_ms=0, stage_memory_mb=0, io_sigma=0.5, seed=2)
    for _ in range(500):
        flow.kickoff()
    by_stage = collections.defaultdict(list)
    for i, wait in enumerate(sleeps):
        by_stage[STAGES[i % len(STAGES)]].append(wait)
    for stage, waits in by_stage.items():
        expected_s = flow.stage_io_ms[stage] / 1000
        assert abs(sum(waits) / len(waits) / expected_s - 1) < 0.08, stage
    assert len(set(sleeps)) == len(sleeps)  # spread, not one value


def test_processing_time_base_scales_the_default_waits_and_dicts_override_one_stage():
    flow = MockAIWritingFlowV2(processing_time_base=0.4, stage_io_ms={"research": 7})
    assert flow.stage_io_ms["research"] == 7
    others = sum(ms for s, ms in flow.stage_io_ms.items() if s != "research")
    assert others == pytest.approx(400 * (1 - flow_mod.STAGE_IO_SHARE["research"]))
    assert sum(MockAIWritingFlowV2(processing_time_base=0.4).stage_io_ms.values()) == pytest.approx(400)


def test_style_loop_reruns_drafting_and_is_bounded(sleeps):
    always = MockAIWritingFlowV2(failure_rate=0, style_loop_probability=1, max_style_loops=2,
                                 stage_cpu_ms=0, stage_memory_mb=0, io_sigma=0, seed=1)
    result = always.kickoff()
    assert result.ok and result.style_loops == 2
    # draft_generation and style_validation each ran three times
    assert len(sleeps) == len(STAGES) + 2 * 2
    assert list(result.stage_timings_us) == list(STAGES)

    assert idle_flow(failure_rate=0, style_loop_probability=0).kickoff().style_loops == 0
    some = idle_flow(failure_rate=0, style_loop_probability=0.5, max_style_loops=3, seed=4)
    loops = [some.kickoff().style_loops for _ in range(300)]
    assert max(loops) == 3 and min(loops) == 0


# ---------------------------------------------------------------- real work


def test_cpu_budget_is_calibrated_in_thread_cpu_time():
    # A dict sets only the stages it names: the others must be zeroed explicitly.
    flow = idle_flow(failure_rate=0, style_loop_probability=0,
                     stage_cpu_ms={**{s: 0 for s in STAGES}, "research": 20})
    flow.kickoff()  # first call makes this thread's matrices
    start = time.thread_time()
    flow.kickoff()
    used_ms = (time.thread_time() - start) * 1000
    assert abs(used_ms - 20) <= 2, used_ms


@pytest.mark.parametrize("cpu_ms", [1, 5])
def test_burn_cpu_reports_what_it_used(cpu_ms):
    start = time.thread_time()
    reported_s = burn_cpu(cpu_ms)
    used_s = time.thread_time() - start
    assert abs(reported_s * 1000 - cpu_ms) <= 0.1 * cpu_ms
    assert abs(used_s - reported_s) <= 0.1 * reported_s


def test_touch_memory_makes_every_page_resident():
    trim_heap()  # freed but resident heap pages (earlier tests) would hide new ones
    before = rss()
    ws = touch_memory(48)
    grown = rss() - before
    assert ws.nbytes == 48 * MB
    assert grown >= 0.9 * 48 * MB
    assert touch_memory(0) is None


def test_stage_working_set_is_resident_during_the_stage_and_released_after():
    flow = MockAIWritingFlowV2(processing_time_base=0, failure_rate=0, style_loop_probability=0, stage_cpu_ms=0,
                               stage_memory_mb={"research": 96}, stage_io_ms={"research": 300}, io_sigma=0)
    trim_heap()  # freed but resident heap pages (earlier tests) would hide new ones
    before = rss()
    peak = before
    worker = threading.Thread(target=flow.kickoff)
    worker.start()
    while worker.is_alive():
        peak = max(peak, rss())
        time.sleep(0.01)
    worker.join()
    assert peak - before >= 0.9 * 96 * MB
    assert rss() - before < 0.5 * 96 * MB  # 96 MB is above glibc's mmap threshold: freed to the OS


def test_leak_retains_memory_per_operation():
    flow = idle_flow(leak_mb_per_op=8, failure_rate=0.5, seed=1)
    trim_heap()  # freed but resident heap pages (earlier tests) would hide new ones
    before = rss()
    for _ in range(6):
        flow.kickoff()  # failed kickoffs leak too
    assert flow.leaked_mb == pytest.approx(48)
    assert rss() - before >= 0.9 * 48 * MB
    flow.release_leaks()
    assert flow.leaked_mb == 0
    assert idle_flow().leaked_mb == 0


# ---------------------------------------------------------------- threads and processes


def test_kickoff_is_thread_safe_and_each_call_gets_its_own_index():
    params = dict(failure_rate=0.3, stage_cpu_ms=0.2, stage_memory_mb=1, stage_io_ms=1, stage_timeout_ms="none",
                  seed=21)
    shared = MockAIWritingFlowV2(**params)
    results, errors = [], []

    def slot():
        try:
            for _ in range(25):
                results.append(signature(shared.kickoff()))
        except BaseException as exc:  # noqa: BLE001 - any escape is the failure
            errors.append(exc)

    threads = [threading.Thread(target=slot) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sequential = MockAIWritingFlowV2(**params)
    expected = [signature(sequential.kickoff()) for _ in range(100)]
    # the same 100 call indices were used, whatever order threads took them in
    assert collections.Counter(results) == collections.Counter(expected)


def test_pickled_flow_keeps_its_parameters_and_restarts_its_sequence():
    flow = idle_flow(failure_rate=0.4, leak_mb_per_op=1, seed=8)
    first = [signature(flow.kickoff()) for _ in range(10)]
    copy = pickle.loads(pickle.dumps(flow))
    assert copy.to_dict() == flow.to_dict()
    assert copy.leaked_mb == 0
    assert [signature(copy.kickoff()) for _ in range(10)] == first


# ---------------------------------------------------------------- parameters


def test_flow_params_document_every_constructor_parameter():
    names = [p for p in inspect.signature(MockAIWritingFlowV2).parameters]
    assert list(FLOW_PARAMS) == names
    for name, entry in FLOW_PARAMS.items():
        typ, _default, help_text = entry
        assert isinstance(typ, str) and typ
        assert isinstance(help_text, str) and "\n" not in help_text
    defaults = {n: p.default for n, p in inspect.signature(MockAIWritingFlowV2).parameters.items()}
    assert FLOW_PARAMS["failure_rate"][1] == defaults["failure_rate"] == 0.05
    assert FLOW_PARAMS["processing_time_base"][1] == defaults["processing_time_base"] == 0.1
    assert FLOW_PARAMS["stage_timeout_ms"][1] == defaults["stage_timeout_ms"] == "auto"
    assert FLOW_PARAMS["timeout_factor"][1] == defaults["timeout_factor"] == "auto"


def test_build_flow_parses_cli_strings_to_types():
    flow = build_flow({
        "processing_time_base": "250ms",
        "failure_rate": "0.1",
        "stage_cpu_ms": "research:5, draft_generation:2.5",
        "stage_memory_mb": "2",
        "stage_io_ms": "0",
        "io_sigma": "0",
        "stage_timeout_ms": "research:150, quality_check:none, audience_align:0",
        "timeout_factor": "3",
        "style_loop_probability": "1",
        "max_style_loops": "3",
        "leak_mb_per_op": "0.5",
        "seed": "7",
    })
    assert flow.processing_time_base == 0.25
    assert flow.failure_rate == 0.1
    assert flow.stage_cpu_ms["research"] == 5.0 and flow.stage_cpu_ms["draft_generation"] == 2.5
    assert flow.stage_cpu_ms["quality_check"] == flow_mod.DEFAULT_STAGE_CPU_MS["quality_check"]
    assert flow.stage_memory_mb == dict.fromkeys(STAGES, 2.0)
    assert flow.stage_io_ms == dict.fromkeys(STAGES, 0.0)
    assert flow.timeout_factor == 3.0
    assert flow.stage_timeout_ms["research"] == 150.0
    assert flow.stage_timeout_ms["quality_check"] is None and flow.stage_timeout_ms["audience_align"] is None
    # unset stages keep their auto deadline: 3 × 0 ms wait + 4 × 2.5 ms CPU + 10 ms
    assert flow.stage_timeout_ms["draft_generation"] == 20.0
    assert flow.max_style_loops == 3 and isinstance(flow.max_style_loops, int)
    assert flow.seed == 7 and isinstance(flow.seed, int)
    assert flow.leak_mb_per_op == 0.5
    assert build_flow({"seed": "none"}).seed is None
    assert build_flow({}).to_dict() == MockAIWritingFlowV2().to_dict()
    # typed values (from a TOML plan) pass as they are
    assert build_flow({"stage_cpu_ms": {"research": 3}, "seed": 4}).stage_cpu_ms["research"] == 3.0


@pytest.mark.parametrize(
    "key, value",
    [
        ("failure_rate", "1.5"),
        ("failure_rate", "often"),
        ("style_loop_probability", "-0.1"),
        ("max_style_loops", "2.5"),
        ("max_style_loops", "-1"),
        ("seed", "-3"),
        ("seed", "abc"),
        ("io_sigma", "nan"),
        ("leak_mb_per_op", "-1"),
        ("processing_time_base", "soon"),
        ("stage_cpu_ms", "nosuch_stage:3"),
        ("stage_cpu_ms", "research:x"),
        ("stage_memory_mb", "research"),
        ("stage_io_ms", "inf"),
        ("stage_timeout_ms", "-5"),
        ("stage_timeout_ms", "soon"),
        ("stage_timeout_ms", "inf"),
        ("stage_timeout_ms", "research:-1"),
        ("stage_timeout_ms", "drafting:100"),
        ("stage_timeout_ms", "research"),
        ("timeout_factor", "0.5"),
        ("timeout_factor", "often"),
        ("timeout_factor", "nan"),
    ],
)
def test_build_flow_rejects_bad_values_in_one_line_naming_the_key(key, value):
    with pytest.raises(UsageError) as info:
        build_flow({key: value})
    message = str(info.value)
    assert key in message and "\n" not in message


def test_build_flow_rejects_unknown_keys():
    with pytest.raises(UsageError, match="failure_rat.*unknown parameter.*failure_rate"):
        build_flow({"failure_rat": "0.1"})


def test_constructor_rejects_unknown_stage_names():
    with pytest.raises(UsageError, match="stage_memory_mb.*'drafting'"):
        MockAIWritingFlowV2(stage_memory_mb={"drafting": 3})


# ---------------------------------------------------------------- stage deadlines


def only(**ms):
    """Deadlines for the stages named, none for the others (an idle stage's auto deadline is 10 ms)."""
    return {**dict.fromkeys(STAGES), **ms}


def test_wait_past_the_deadline_fails_the_stage_as_a_timeout_and_stops_the_flow():
    flow = idle_flow(failure_rate=0, processing_time_base=0, stage_io_ms={"research": 80}, io_sigma=0,
                     stage_timeout_ms=only(research=20))
    result = flow.kickoff()
    assert result.state == "failed" and not result.ok and result.timed_out
    assert result.failed_stage == "research"
    assert result.reason.startswith("timed out") and "deadline 20 ms" in result.reason
    assert "simulated" not in result.reason
    assert list(result.stage_timings_us) == ["input_validation", "research"]  # nothing after it ran
    # the client gives up at the deadline: the 80 ms wait was cut at 20 ms
    assert 20_000 <= result.stage_timings_us["research"] < 60_000
    assert result.output == {}


def test_cpu_past_the_deadline_fails_the_stage_after_it():
    flow = idle_flow(failure_rate=0, stage_cpu_ms={"draft_generation": 15}, stage_timeout_ms=only(draft_generation=5))
    result = flow.kickoff()
    assert result.timed_out and result.failed_stage == "draft_generation"
    assert result.stage_timings_us["draft_generation"] >= 14_000  # CPU is not interrupted (±half a product)
    assert re.fullmatch(r"timed out after >(2|4|8|16)× its deadline \(5 ms\)", result.reason), result.reason
    # the same stage within its deadline finalizes
    assert idle_flow(failure_rate=0, stage_cpu_ms={"draft_generation": 15},
                     stage_timeout_ms=only(draft_generation=500)).kickoff().ok


def test_default_deadlines_do_not_fail_a_quiet_run():
    # Default CPU and memory per stage, waits of ~2 ms per kickoff: the deadlines (~11-16 ms) are
    # mostly the margins for the stages' own work, which must cover it.
    flow = MockAIWritingFlowV2(processing_time_base=0.002, failure_rate=0, seed=1)
    assert all(ms is not None and ms < 20 for ms in flow.stage_timeout_ms.values())
    results = [flow.kickoff() for _ in range(200)]
    assert [r.reason for r in results if not r.ok] == []


def test_default_deadlines_derive_from_each_stage_cost():
    flow = MockAIWritingFlowV2()
    assert flow.timeout_factor == 5.0
    for stage in STAGES:  # k × mean wait + 4 × CPU + 10 ms, rounded up to a whole ms
        expected = math.ceil(5 * flow.stage_io_ms[stage] + 4 * flow.stage_cpu_ms[stage] + 10)
        assert flow.stage_timeout_ms[stage] == expected, stage
    assert flow.stage_timeout_ms["research"] == 162 and flow.stage_timeout_ms["input_validation"] == 36
    assert MockAIWritingFlowV2(processing_time_base=0.4).stage_timeout_ms["research"] == 612
    assert MockAIWritingFlowV2(stage_io_ms={"research": 7}).stage_timeout_ms["research"] == 47
    assert MockAIWritingFlowV2(timeout_factor=3).stage_timeout_ms["research"] == 102
    # k follows io_sigma so the quiet overrun probability stays put; never below 2
    assert MockAIWritingFlowV2(io_sigma=1).timeout_factor == pytest.approx(math.exp(flow_mod.TIMEOUT_Z - 0.5))
    assert MockAIWritingFlowV2(io_sigma=0).timeout_factor == 2.0
    one = MockAIWritingFlowV2(stage_timeout_ms={"research": 50})
    assert one.stage_timeout_ms == {**flow.stage_timeout_ms, "research": 50.0}


@pytest.mark.parametrize("value", ["none", "0", 0, None])
def test_none_or_zero_switches_every_deadline_off(value):
    flow = idle_flow(failure_rate=0, stage_cpu_ms={"research": 15}, stage_timeout_ms=value)
    assert flow.stage_timeout_ms == dict.fromkeys(STAGES)
    assert flow.kickoff().ok
    assert build_flow({"stage_timeout_ms": value}).stage_timeout_ms == dict.fromkeys(STAGES)


def test_one_stage_switched_off_keeps_the_others():
    flow = idle_flow(failure_rate=0, stage_cpu_ms={"research": 15, "quality_check": 15},
                     stage_timeout_ms="research:0, quality_check:5, " + ", ".join(
                         f"{s}:none" for s in STAGES if s not in ("research", "quality_check")))
    result = flow.kickoff()
    assert result.failed_stage == "quality_check" and result.timed_out  # research ran past 5 ms unchecked


def test_quiet_overrun_probability_matches_the_waits_drawn(sleeps):
    flow = idle_flow(failure_rate=0, style_loop_probability=0, stage_io_ms=10, io_sigma=0.5, seed=12)
    for _ in range(2000):
        flow.kickoff()
    assert len(sleeps) == 2000 * len(STAGES)
    for k in (2, 3):
        share = sum(w > k * 0.010 for w in sleeps) / len(sleeps)
        assert share == pytest.approx(wait_overrun_probability(k, 0.5), rel=0.25), k
    # the figures in the module docstring
    assert wait_overrun_probability(5, 0.5) == pytest.approx(2.6e-4, rel=0.02)
    assert wait_overrun_probability(2, 0) == 0.0 and wait_overrun_probability(0.5, 0) == 1.0


def test_seeded_waits_do_not_depend_on_deadline_misses(sleeps):
    def first_waits(flow):
        sleeps.clear()
        out = []
        for _ in range(30):
            before = len(sleeps)
            flow.kickoff()
            out.append(sleeps[before])  # input_validation's wait
        return out

    params = dict(failure_rate=0, stage_cpu_ms=0, stage_memory_mb=0, seed=4)
    strict = MockAIWritingFlowV2(stage_timeout_ms={"research": 0.5}, **params)  # cut every research wait
    assert all(r.timed_out for r in (MockAIWritingFlowV2(stage_timeout_ms={"research": 0.5}, **params).kickoff()
                                     for _ in range(5)))
    assert first_waits(strict) == first_waits(MockAIWritingFlowV2(stage_timeout_ms="none", **params))


def test_timeout_reasons_are_few_per_deadline():
    assert timeout_reason(212, 200) == "timed out (deadline 200 ms)"
    assert timeout_reason(450, 200) == "timed out after >2× its deadline (200 ms)"
    assert timeout_reason(10_000, 200) == "timed out after >16× its deadline (200 ms)"
    assert timeout_reason(3, 2.5) == "timed out (deadline 2.5 ms)"
    # error counts are keyed by reason: a run must not make one key per kickoff
    assert len({timeout_reason(ms, 200) for ms in range(200, 100_000, 7)}) == 5
