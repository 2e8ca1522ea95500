"""`python -m devrun` (what `make run` calls): the whole system in the foreground."""

import sys

from devrun.launcher import main

sys.exit(main())
