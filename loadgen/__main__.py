"""``python -m loadgen``: the command line (:func:`loadgen.cli.main`); its return value is the exit code."""

from loadgen.cli import main

raise SystemExit(main())
