"""``python -m drone_training.experiments NAME`` (the same as ``drone experiments NAME``)."""

import sys

from . import main

sys.exit(main())
