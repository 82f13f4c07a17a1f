"""Command-line scripts, run from the repo root (python scripts/NAME.py); corpus.py: data.py's."""
