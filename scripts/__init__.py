"""Command-line scripts, run from the repo root: python scripts/NAME.py. data.py uses corpus.py."""
