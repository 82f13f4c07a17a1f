"""Command-line scripts (run from the repo root: python scripts/NAME.py), and corpus.py, the library of scripts/data.py."""
