"""``python -m physics_lm.data.igsm COMMAND ...`` (see cli.py for the subcommand registry)."""

import sys

from physics_lm.data.igsm.cli import main

if __name__ == "__main__":
    sys.exit(main())
