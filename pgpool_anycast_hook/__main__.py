"""`python3 -m pgpool_anycast_hook` runs the same entry point as the console script."""

import sys

from pgpool_anycast_hook.main import main

sys.exit(main())
