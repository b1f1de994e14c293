"""``python -m rehearsal.cli`` runs the command line."""

import sys

from rehearsal.cli.main import main

sys.exit(main())
