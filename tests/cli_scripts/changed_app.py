"""flux_app, changed: the approval wait renamed, the held workflow gone (``flux check`` tests)."""

from __future__ import annotations

from flux_app import fails, finish, greet, ship

from flux import create_workflow

approval = (
    create_workflow("approval")
    .step("ship", ship)
    .wait_for_signal("manager-approval", signal="approved")
    .step("finish", finish)
    .build()
)

workflows = [greet, fails, approval]
