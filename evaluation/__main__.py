"""`python -m evaluation`: the same command as `s1 eval` (evaluation/cli.py)."""
import sys

from evaluation.cli import main

sys.exit(main())
