"""`python -m sandbox ...`: the sandbox's commands (see `sandbox.cli`)."""

import sys

from sandbox.cli import main

sys.exit(main())
