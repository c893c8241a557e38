"""`python -m attrvis_jax` runs the `attrvis` command."""

import sys

from attrvis_jax.apps.cli import main

sys.exit(main())
