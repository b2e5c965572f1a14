"""Runtime backends: where function code actually runs."""
