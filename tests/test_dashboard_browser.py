"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Signs in with the API token, opens the runs list (and sees a new run appear in it by itself),
filters and searches it, clicks into a run and finds its steps on the timeline, then presses
Cancel on a waiting run and sees its status change. Screenshots are kept in
``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright
from server_support import serving

from flux import FluxEngine, RetryPolicy, StepContext, create_workflow
from flux.server import create_app
from flux.storage import SQLiteStorage

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "browser-token"


def flaky_once(ctx: StepContext[Any]) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("carrier API timed out")
    return "label-123"


shipping = (
    create_workflow("ship-order")
    .step("reserve", lambda ctx: ctx.data.update(reserved=True))
    .step("label", flaky_once, retry=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=0))
    .commit("dispatch", lambda ctx: {"tracking": "TRK-9"})
)
approval = (
    create_workflow("refund-approval")
    .step("check", lambda ctx: "ok")
    .wait_for_signal("approve", signal="approved")
    .step("refund", lambda ctx: "refunded")
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "install Debian's Chromium: apt-get install -y chromium chromium-driver"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


async def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_runs_list_run_timeline_and_cancel(browser: Browser, tmp_path: Path) -> None:
    engine = FluxEngine(storage=SQLiteStorage(tmp_path / "flux.db"))
    app = create_app(engine, workflows=[shipping, approval], token=TOKEN)
    async with serving(app) as http:
        shipped = await engine.execute(shipping, {"order": 1}, labels={"customer": "acme"})
        waiting = await engine.execute(approval, None)
        assert (shipped.status, waiting.status) == ("completed", "suspended")

        page = await browser.new_page(viewport={"width": 1200, "height": 800})
        await page.goto(str(http.base_url) + "/")
        await page.fill("input[name=token]", TOKEN)  # asked once; the cookie keeps it
        await page.click("button[type=submit]")
        await page.wait_for_selector(f"tr[data-run='{shipped.id}']")
        assert await page.locator("#runs tr").count() == 2
        await shot(page, "dashboard-runs.png")
        another = await engine.execute(shipping, {"order": 2})
        await page.wait_for_selector(f"tr[data-run='{another.id}']")  # the list refreshes itself
        assert await page.locator("#runs tr").count() == 3

        await page.click("a:text('suspended')")  # the status filter
        await page.wait_for_selector(f"tr[data-run='{waiting.id}']")
        assert await page.locator("#runs tr").count() == 1
        await page.goto(str(http.base_url) + "/")
        await page.fill("input[name=q]", "customer:acme")  # search by label
        await page.press("input[name=q]", "Enter")
        await page.wait_for_selector(f"tr[data-run='{shipped.id}']")
        assert await page.locator("#runs tr").count() == 1

        await page.click(f"tr[data-run='{shipped.id}'] a")
        await page.wait_for_selector("#timeline")
        rows = page.locator("#timeline .tl-row[data-step]")
        assert [await rows.nth(i).get_attribute("data-step") for i in range(await rows.count())] == [
            "reserve",
            "label",
            "dispatch",
        ]
        label_row = page.locator(".tl-row[data-step='label']")
        assert "2 attempts" in await label_row.inner_text()
        assert await page.locator(".tl-row[data-step='label'] .tl-bar").count() == 1
        assert "TRK-9" in await page.inner_text("#run-outputs")
        assert await page.locator(".plan .node").count() == 3
        await shot(page, "dashboard-run.png")

        await page.goto(str(http.base_url) + f"/runs/{waiting.id}")
        await page.wait_for_selector("#run-status[data-status='suspended']")
        assert "waiting for approved" in await page.inner_text(".tl-row[data-step='approve']")
        await shot(page, "dashboard-waiting.png")
        await page.click("button[data-action=cancel]")
        await page.wait_for_selector("#run-status[data-status='cancelled']")
        await shot(page, "dashboard-cancelled.png")
        assert (await engine.get(waiting.id)).status == "cancelled"

        await page.goto(str(http.base_url) + "/workflows")
        assert await page.locator("h2").all_inner_texts() == ["ship-order", "refund-approval"]
