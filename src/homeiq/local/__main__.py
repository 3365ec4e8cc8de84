"""`python -m homeiq.local`: run the whole pipeline locally."""

import sys

from homeiq.local.pipeline import main

sys.exit(main())
