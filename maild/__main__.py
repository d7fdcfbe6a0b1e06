"""python -m maild."""

import sys

from maild.cli import main

sys.exit(main())
