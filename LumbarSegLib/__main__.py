"""``python -m LumbarSegLib`` runs the ``lumbarseg`` command."""

import sys

from LumbarSegLib.cli import main

sys.exit(main())
