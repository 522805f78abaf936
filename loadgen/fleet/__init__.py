"""Fleet runs: one plan, one shard per machine, on Dask distributed (DESIGN §12).

``master.py`` runs a fleet from the CLI's process, ``shard.py`` is the Dask
task each machine runs (a complete local loadgen run), ``merge.py`` splits
the load and combines what shards measured, ``summary.py`` builds the
fleet's report, ``rebuild.py`` builds it again from the shards' run
directories (``loadgen report``), ``state.py`` holds what the master knows of
each shard, ``progress.py`` the fleet's status line, ``cluster.py`` finds and
starts Dask clusters. Dask is imported only when a fleet command runs.
"""

from __future__ import annotations

from .. import options as opts

PLAN = "plan"  # a fleet's third kind, beside options.RUN and options.SUITE: every shard runs a plan file's entries


def run(scenario="concurrent_load", *, progress=None, command=None, **options):
    """Run one scenario as a fleet on the Dask scheduler at ``cluster=``; returns an ``api.Report``.

    ``options`` are :func:`loadgen.api.run`'s plus the fleet's (``cluster``, ``shards``,
    ``cluster_timeout``, ``start_lead``, ``silence_limit``): the load is split across the shards,
    everything per machine (workers, slots, thresholds) is applied on each. ``shards``: use exactly
    this many (wait for them up to ``cluster_timeout``); default: every worker offering the
    ``loadgen`` resource (or one per host if none does). ``start_lead``: the longest wait for every
    shard's pool to be ready (default 60 s); the load begins together just after the last is.
    ``silence_limit``: a shard silent this long is lost (default 15 s). Raises :class:`UsageError`
    (:class:`ClusterError`) before any load is applied — a shard not ready within ``start_lead``
    included, ``metrics_port`` (no live metrics from a fleet yet), ``log_level`` — and :class:`TypeError`
    for an unknown option. ``prom_textfile`` is written at the end, as on the command line.
    """
    from ..api import api_settings, presented

    settings = api_settings(options, opts.RUN, "fleet.run", fleet=True)
    return presented(settings, progress, lambda p: run_fleet(opts.RUN, [scenario], settings, progress=p,
                                                             command=command))


def run_suite(*, only=None, progress=None, command=None, **options):
    """Run the suite (or ``only`` those scenarios) as a fleet; see :func:`run`."""
    from ..api import api_settings, presented

    settings = api_settings(options, opts.SUITE, "fleet.run_suite", fleet=True)
    return presented(settings, progress, lambda p: run_fleet(opts.SUITE, only, settings, progress=p,
                                                             command=command))


def run_fleet(kind, names, settings, *, progress=None, command=None):
    """Run ``names`` (None: every scenario) as a fleet with ``settings`` (a checked
    :class:`~loadgen.options.Layer` holding ``cluster``); the CLI's entry. ``progress``: None for
    the live status line on a terminal (quiet settings: none)."""
    from .. import scenarios
    from ..errors import UsageError

    names = list(names or scenarios.names())
    for n in names:
        scenarios.get(n)  # an unknown name is a usage error before the cluster is contacted
    if not settings.get("cluster"):
        raise UsageError("a fleet run needs cluster = a Dask scheduler address (tcp://HOST:8786)")
    if kind == opts.RUN:
        settings = opts.mark_abort(settings, scenarios.get(names[0]).criteria)
    from ..api import target_of

    # The target checked here too, before the cluster is contacted (as a plan's is, in plan.prepare): one
    # that cannot be imported, or that exits when imported, is a usage error, not every shard's refusal.
    target_of(settings)
    return _follow(kind, names, settings, progress, command=command)


def run_plan_fleet(path, upper, *, only=None, progress=None, command=None):
    """``run --config PLAN --cluster ADDRESS``: every shard runs the whole plan (each entry's load
    split over the shards, in order) and the fleet's report has one merged component per entry.
    ``upper``: the command line's and environment's settings (the fleet keys among them). Raises
    :class:`UsageError` for a bad plan (checked here, before the cluster is contacted) and for a
    parallel plan (its entries run in forked processes, which cannot stream to the fleet yet)."""
    from .. import plan as plans
    from ..errors import UsageError

    plan = plans.load(path)
    local = upper.without(*opts.FLEET_KEYS)
    prepared = plans.prepare(plan, local, only=only)
    if prepared.settings.get("parallel") and len(prepared.entries) > 1:
        raise UsageError(f"{path}: parallel = true with --cluster: not supported yet (each entry would run in a "
                         "forked process of its own on every shard); run it with parallel = false")
    return _follow(PLAN, [e.label for e in prepared.entries], opts.merge(prepared.settings, upper), progress,
                   command=command, plan=(plan, local, only), entry_settings=[e.settings for e in prepared.entries])


def _follow(kind, names, settings, progress, **master):
    """Run a :class:`~loadgen.fleet.master.FleetMaster` (``master``: its keyword arguments) with
    ``progress``, or with the fleet's own status line when None (quiet settings: none)."""
    from .master import FleetMaster
    from .progress import FleetProgress

    own = progress is None
    if own:
        progress = FleetProgress(enabled=None if not opts.value(settings, "quiet") else False,
                                 interval=opts.value(settings, "progress_interval"))
    try:
        return FleetMaster(kind, names, settings, progress=progress, **master).run()
    finally:
        if own:
            progress.done()


def start_local_cluster(workers, port=0):
    """A loopback Dask cluster for trying fleet mode (see :func:`loadgen.fleet.cluster.start_local_cluster`)."""
    from .cluster import start_local_cluster as start

    return start(workers, port)
