import sys

from s1.curate.cli import main

sys.exit(main(sys.argv[1:]))
