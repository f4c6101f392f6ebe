"""`python -m gateway start ...`: the same as `quorum gateway start ...`."""

import sys

from gateway.main import main

sys.exit(main())
