"""python -m bench: the end-to-end throughput benchmark (see bench/run.py)."""

import sys

from bench.run import main

sys.exit(main())
