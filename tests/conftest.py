"""Test-session set-up shared by every test.

``RAY_AUTH_MODE`` is set here, before anything imports Ray, so this process and every process it starts
(``ray start``, the CLI, job drivers) use the same mode (DESIGN section 7).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
