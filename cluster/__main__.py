"""``python -m cluster`` is the `cluster` console script."""

import sys

from cluster.launch.cli import main

sys.exit(main())
