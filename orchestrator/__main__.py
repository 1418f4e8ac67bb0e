"""`python -m orchestrator` is the `reimage` command."""

from orchestrator.cli.main import main

raise SystemExit(main())
