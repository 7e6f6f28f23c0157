"""`python -m resolverd` is the `resolverd` command."""

import sys

from .cli import main

sys.exit(main())
