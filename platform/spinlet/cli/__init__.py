"""The `spinlet` command line: a thin client of the HTTP API, plus `serve`."""
