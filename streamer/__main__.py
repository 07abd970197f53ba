"""``python -m streamer``: the command line."""

import sys

from streamer.operations.cli import main

sys.exit(main())
