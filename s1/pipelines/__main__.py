"""`python -m s1.pipelines` == `s1 demo` (the whole pipeline at toy scale)."""
import sys

from s1.pipelines.demo import main

sys.exit(main() or 0)
