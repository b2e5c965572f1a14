"""Dependency layers: a function's requirements resolved into wheels for its runtime's Python,
installed once into a directory, stored in chunks, and linked into its sandboxes at `/init`."""
