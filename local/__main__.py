"""``python -m local``: the local stack (``make run``); ``python -m local serve-api``: the API alone."""

import sys

from local.runner import main

sys.exit(main())
