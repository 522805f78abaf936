"""Stressors without a child process: argument checks, one-line descriptions, the latency histogram.
The stressors at work: ``tests/integration/test_stressors.py``."""

import pytest

from loadgen.errors import UsageError
from loadgen.stressors import MB, CpuStressor, IoStressor, LatencyHistogram, MemoryStressor


@pytest.mark.parametrize(
    "make",
    [
        lambda: CpuStressor(0),
        lambda: CpuStressor(101),
        lambda: CpuStressor("50"),
        lambda: CpuStressor(float("nan")),
        lambda: CpuStressor(50, cores=0),
        lambda: CpuStressor(50, cores=[10_000]),
        lambda: CpuStressor(50, cores=[]),
        lambda: CpuStressor(50, cores="all"),
        lambda: MemoryStressor(0),
        lambda: MemoryStressor(-5),
        lambda: MemoryStressor(10, steps=0),
        lambda: MemoryStressor(10, steps=2.5),
        lambda: MemoryStressor(10, step_interval_s=-1),
        lambda: MemoryStressor(10 ** 9),  # far beyond available memory
        lambda: MemoryStressor(10, huge_pages="yes"),
        lambda: IoStressor(file_bytes=0),
        lambda: IoStressor(file_bytes=8 * MB, max_total_bytes=4 * MB),
        lambda: IoStressor(file_bytes=MB, max_total_bytes=3 * MB, workers=4),
        lambda: IoStressor(workers=0),
        lambda: IoStressor(tcp="yes"),
        lambda: IoStressor(tcp_block_bytes=1 << 20),
        lambda: IoStressor(dir="/nonexistent/loadgen"),
    ],
)
def test_invalid_arguments_raise_usage_error(make):
    with pytest.raises(UsageError) as info:
        make()
    assert "\n" not in str(info.value) and str(info.value)


def test_describe_is_one_line():
    for s in (CpuStressor(50, cores=1), MemoryStressor(64, steps=2, step_interval_s=1), IoStressor()):
        text = s.describe()
        assert text and "\n" not in text and text.startswith(s.kind)


# ---------------------------------------------------------------- latency histogram


def test_latency_histogram_percentiles_and_merge():
    a, b = LatencyHistogram(), LatencyHistogram()
    for ms in range(1, 51):
        a.record(ms / 1000)
    for ms in range(51, 101):
        b.record(ms / 1000)
    merged = LatencyHistogram.from_dict(a.to_dict()).merge(b)
    assert merged.count == 100
    assert merged.percentile(50) == pytest.approx(0.050, rel=0.02)
    assert merged.percentile(99) == pytest.approx(0.099, rel=0.02)
    assert LatencyHistogram().percentile(50) != LatencyHistogram().percentile(50)  # nan when empty
