"""`python -m s1.infer ...` == `s1 generate ...`."""
import sys

from s1.infer.cli import generate_main

sys.exit(generate_main(sys.argv[1:]))
