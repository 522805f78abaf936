"""Measurement without processes: HDR histograms and accounting (``stats``), least-squares fits
(``trend``), the leak verdict (``leak``) and the Universal Scalability Law (``usl``)."""

# The latency statistics every summary carries (``stats.Histogram.summary_ms``) and criteria
# (``p95_ms < 300``), reports and Prometheus name: the percentiles, then min, max and mean. p999 and
# p9999 are 99.9 and 99.99; criteria take ``p99.9_ms`` and ``p99.99_ms`` too (STAT_ALIASES). Here, not
# in ``stats``, so that the command line can name them without importing numpy.
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99))
STATISTICS = tuple(k for k, _ in PERCENTILES) + ("min", "max", "mean")
STAT_ALIASES = {"p99.9": "p999", "p99.99": "p9999"}
