"""`python -m s1.evaluation`: the same command as `s1 eval` (s1/evaluation/cli.py)."""
import sys

from s1.evaluation.cli import main

sys.exit(main())
