"""changed_app with the old approval plan still listed before the new one (``flux check`` tests)."""

from __future__ import annotations

from changed_app import approval
from flux_app import approval as approval_v1
from flux_app import fails, greet, held

workflows = [greet, fails, held, approval_v1, approval]
