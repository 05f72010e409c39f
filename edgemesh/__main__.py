"""`python -m edgemesh`: the same as the `edgemesh` console script."""

import sys

from .cli import main

sys.exit(main())
