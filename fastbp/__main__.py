"""``python -m fastbp ...`` is the ``fastbp`` command."""
import sys

from fastbp.cli import main

sys.exit(main())
