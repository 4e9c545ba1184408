"""``python -m cluster.k8s render|validate``: the k8s commands without the main ``eventray`` CLI."""

import sys

from .cli import main

sys.exit(main())
