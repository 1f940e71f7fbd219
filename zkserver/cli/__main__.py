"""``python -m zkserver.cli``: the operator console."""

import sys

from zkserver.cli.main import main

sys.exit(main())
