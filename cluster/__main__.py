"""``python -m cluster`` is the `cluster` console script."""

import sys

from cluster.cli import main

sys.exit(main())
