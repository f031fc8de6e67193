"""The dashboard in a real browser: Playwright driving Debian's chromium (headless).

Skipped, with one line saying how to enable it, where Chromium or Playwright is missing;
``COHORTBOT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.app import App
from bot.clock import ManualClock
from tests.conftest import GROUP_A, base_config
from tests.dashboard_helpers import PASSWORD, seed_group, serve

CHROMIUM = Path(os.environ.get("COHORTBOT_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_ENV = "COHORTBOT_REQUIRE_BROWSER"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _why_not() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (make install)"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found"
    return None


_missing = _why_not()
if _missing:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"browser tests are required ({REQUIRE_ENV}) but {_missing}", pytrace=False)
    pytest.skip(
        f"browser tests skipped: {_missing}; enable with `apt-get install -y chromium`",
        allow_module_level=True,
    )

from playwright.async_api import async_playwright  # noqa: E402

from bot.config import parse_settings  # noqa: E402


@pytest.fixture
def sqlite_app(tmp_path: Path, clock: ManualClock) -> App:
    settings = parse_settings(
        base_config(database={"url": f"sqlite:///{tmp_path / 'browser.db'}"}), env={}
    )
    return App.open(settings, clock=clock)


async def test_login_open_group_see_quiet_list_and_chart(
    sqlite_app: App, clock: ManualClock, tmp_path: Path
) -> None:
    await seed_group(sqlite_app, clock)
    try:
        async with serve(sqlite_app) as url, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                # Any request leaving 127.0.0.1 would mean the page needs the internet.
                outside: list[str] = []
                page.on(
                    "request",
                    lambda r: None if r.url.startswith(url) else outside.append(r.url),
                )
                await page.goto(f"{url}/dashboard/group/{GROUP_A}")
                assert page.url == f"{url}/dashboard/login"  # redirected: not logged in
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{url}/dashboard/")
                await page.click("text=一班")
                await page.wait_for_url(f"{url}/dashboard/group/{GROUP_A}")

                quiet = page.locator("#quiet")
                assert await quiet.locator("tbody tr").count() == 4  # the radar's flagged learners
                assert "阿杰" in await quiet.inner_text()
                assert "高危警报" in await quiet.inner_text()

                chart = page.locator("svg#activity-chart")
                await chart.wait_for(state="visible")
                box = await chart.bounding_box()
                assert box is not None and box["width"] > 600 and box["height"] > 150
                assert await chart.locator("rect.bar").count() == 14
                assert await chart.locator("circle.dot").count() == 14

                # The signals wrap inside their card: the page never gets wider than a phone's
                # screen (at worst a card scrolls sideways).
                for width in (1280, 390):
                    await page.set_viewport_size({"width": width, "height": 900})
                    wide = await page.evaluate("document.documentElement.scrollWidth")
                    assert wide <= width, (width, wide)
                await page.set_viewport_size({"width": 1280, "height": 900})

                shot = tmp_path / "dashboard-group.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                assert outside == []
                keep = os.environ.get("COHORTBOT_KEEP_SCREENSHOT")  # to look at it by hand
                if keep:
                    await page.screenshot(path=keep, full_page=True)
            finally:
                await browser.close()
    finally:
        sqlite_app.close()
