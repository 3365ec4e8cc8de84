"""`python -m homeiq_local`: run the whole pipeline locally."""

import sys

from homeiq_local.pipeline import main

sys.exit(main())
