"""`python -m infer ...` == `s1 generate ...`."""
import sys

from infer.cli import generate_main

sys.exit(generate_main(sys.argv[1:]))
