"""`python -m worker` is `signout-worker`."""

import sys

from worker.cli import main

sys.exit(main())
