"""`python -m s1 ...` == the `s1` console command."""
import sys

from s1.cli import main

sys.exit(main())
