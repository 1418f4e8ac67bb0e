"""`python -m orchestrator` is the `reimage` command."""

from orchestrator.cli import main

raise SystemExit(main())
