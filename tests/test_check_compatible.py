"""check_compatible: the stored runs a changed plan would strand, on a database with old runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux import FluxEngine, PlanMismatchError, create_workflow
from flux.storage import SQLiteStorage
from flux.testing import FakeClock, check_compatible

V1 = (
    create_workflow("onboard")
    .step("create", lambda ctx: "account")
    .wait_for_signal("verify", signal="verified")
    .step("welcome", lambda ctx: "mail")
    .build()
)
V2 = (  # "verify" renamed, a step added before it
    create_workflow("onboard")
    .step("create", lambda ctx: "account")
    .step("score", lambda ctx: 1)
    .wait_for_signal("kyc", signal="verified")
    .step("welcome", lambda ctx: "mail")
    .build()
)
OTHER = create_workflow("other").wait_for_signal("w", signal="go").build()


@pytest.fixture
async def old_db(tmp_path: Path) -> SQLiteStorage:
    """A database with runs of V1: two waiting, one finished; and a waiting run of another workflow."""
    async with FluxEngine(SQLiteStorage(tmp_path / "flux.db"), clock=FakeClock()) as engine:
        waiting = [await engine.execute(V1, run_id=f"old-{i}") for i in range(2)]
        assert all(r.status == "suspended" for r in waiting)
        done = await engine.execute(V1, run_id="done")
        await engine.signal(done.id, "verified")
        assert (await engine.resume(done.id)).status == "completed"
        await engine.execute(OTHER, run_id="other")
    return SQLiteStorage(tmp_path / "flux.db")


async def test_a_changed_plan_lists_the_unfinished_runs_it_would_strand(old_db: SQLiteStorage) -> None:
    stranded = await check_compatible(old_db, V2)
    await old_db.close()
    assert [run.run_id for run in stranded] == ["old-0", "old-1"]
    first = stranded[0]
    assert (first.workflow, first.status, first.fingerprint) == ("onboard", "suspended", V1.fingerprint)
    assert first.differences == (  # both sides of the rename (and the step added before it)
        "step 'verify' ran in the run but is not in the plan",
        "plan step 'score' is not in the run's history",
        "plan step 'kyc' is not in the run's history",
    )
    assert str(first).startswith(
        f"run old-0 (onboard, suspended, fingerprint {V1.fingerprint}): step 'verify'"
    )


async def test_the_engine_agrees_those_runs_cannot_resume(old_db: SQLiteStorage) -> None:
    async with FluxEngine(old_db, clock=FakeClock(), workflows=[V2]) as engine:
        with pytest.raises(PlanMismatchError, match="step 'verify' ran in the run but is not in the plan"):
            await engine.resume("old-0")


async def test_nothing_is_stranded_by_the_same_plan_or_with_the_old_version_kept(
    old_db: SQLiteStorage,
) -> None:
    assert await check_compatible(old_db, V1) == []
    assert await check_compatible(old_db, V2, versions=[V1]) == []
    await old_db.close()


async def test_an_order_change_is_described(old_db: SQLiteStorage) -> None:
    swapped = (
        create_workflow("onboard")
        .wait_for_signal("verify", signal="verified")
        .step("create", lambda ctx: "account")
        .step("welcome", lambda ctx: "mail")
    )
    (first, _) = await check_compatible(old_db, swapped)
    await old_db.close()
    assert (
        "steps ran in the order ['create', 'verify'] but the plan orders them "
        + ("['verify', 'create', 'welcome']")
        in first.differences
    )


async def test_versions_of_another_workflow_are_refused(old_db: SQLiteStorage) -> None:
    with pytest.raises(ValueError, match=r"versions= holds workflow 'other'.*same workflow only"):
        await check_compatible(old_db, V2, versions=[OTHER])
