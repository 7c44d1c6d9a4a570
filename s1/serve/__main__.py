import sys

from s1.serve.cli import main

sys.exit(main())
