"""cohortbot runtime: config, clock, the typed update, dispatching, doors in and out, CLI."""
