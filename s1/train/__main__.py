import sys

from s1.train.cli import main

sys.exit(main())
