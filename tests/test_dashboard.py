"""The dashboard over a real aiohttp server: login on every page, CSRF, sessions, the pages."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import aiohttp
import pytest

from bot.app import App
from bot.clock import ManualClock
from bot.dashboard import build_dashboard, data
from bot.dashboard.auth import SESSION_COOKIE, password_matches
from bot.dashboard.web import PUBLIC_ROUTES
from storage import cohort_dates
from storage.nudges import Offer
from tests.conftest import GROUP_A
from tests.dashboard_helpers import ENV, PASSWORD, TODAY, seed_group, serve


@pytest.fixture
async def url(app: App, clock: ManualClock) -> AsyncIterator[str]:
    await seed_group(app, clock)
    async with serve(app) as base:
        yield base


def client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for an IP address host (127.0.0.1).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(
    http: aiohttp.ClientSession, url: str, password: str = PASSWORD
) -> aiohttp.ClientResponse:
    async with http.get(f"{url}/dashboard/login") as resp:
        token = csrf_of(await resp.text())
    async with http.post(
        f"{url}/dashboard/login",
        data={"csrf": token, "password": password},
        allow_redirects=False,
    ) as resp:
        await resp.read()
        return resp


def session_cookie(http: aiohttp.ClientSession) -> str | None:
    for cookie in http.cookie_jar:
        if cookie.key == SESSION_COOKIE:
            return cookie.value
    return None


def protected_requests(app: App) -> list[tuple[str, str]]:
    """(method, path) for every route of the dashboard except the login form."""
    sub = build_dashboard(app, env=ENV)
    out = []
    for route in sub.router.routes():
        if route.name in PUBLIC_ROUTES or route.method in ("HEAD", "*"):  # "*": the catch-all
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert path, info
        out.append((route.method, "/dashboard" + path.replace("{chat_id}", GROUP_A)))
    return out


async def test_every_dashboard_page_requires_login(app: App, url: str) -> None:
    requests = protected_requests(app)
    paths = {p for _, p in requests}
    assert {
        "/dashboard/",
        f"/dashboard/group/{GROUP_A}",
        f"/dashboard/group/{GROUP_A}/chart.svg",
        "/dashboard/logout",
    } <= paths
    requests += [("GET", "/dashboard/group/nope"), ("GET", "/dashboard/nothing-here")]
    async with client() as http:
        for method, path in requests:
            async with http.request(method, f"{url}{path}", allow_redirects=False) as resp:
                assert resp.status == 302, (method, path, resp.status)
                assert resp.headers["Location"] == "/dashboard/login", path
                body = await resp.text()
                assert "小鱼" not in body and "<svg" not in body
        # A forged or tampered session cookie is no session either.
        http.cookie_jar.update_cookies({SESSION_COOKIE: "9999999999.abc.forged"})
        async with http.get(f"{url}/dashboard/", allow_redirects=False) as resp:
            assert resp.status == 302


async def test_login_sets_a_signed_httponly_lax_cookie_and_opens_every_page(url: str) -> None:
    async with client() as http:
        resp = await login(http, url)
        assert resp.status == 303 and resp.headers["Location"] == "/dashboard/"
        set_cookie = next(v for v in resp.headers.getall("Set-Cookie") if SESSION_COOKIE + "=" in v)
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        assert "Path=/dashboard/" in set_cookie
        async with http.get(f"{url}/dashboard/") as page:
            html = await page.text()
            assert page.status == 200 and "一班" in html and "Python 21天入门" in html
            assert "· 4 名学员" in html  # 小鱼, 李同学, 阿杰, 小白: not the teacher
        async with http.get(f"{url}/dashboard/group/{GROUP_A}/chart.svg") as chart:
            assert chart.status == 200 and chart.content_type == "image/svg+xml"
            assert "<svg" in await chart.text()
        async with http.get(f"{url}/dashboard/nothing-here", allow_redirects=False) as missing:
            assert missing.status == 404
        async with http.get(f"{url}/dashboard/group/nope") as missing:
            assert missing.status == 404


async def test_wrong_or_missing_password_is_refused(app: App, clock: ManualClock) -> None:
    async with serve(app) as url, client() as http:
        resp = await login(http, url, password="guess")
        assert resp.status == 401 and session_cookie(http) is None
    # With no password configured nobody gets in, not even with an empty password.
    async with serve(app, env={}) as url, client() as http:
        async with http.get(f"{url}/dashboard/login") as page:
            assert "COHORTBOT_DASHBOARD_PASSWORD" in await page.text()
        resp = await login(http, url, password="")
        assert resp.status == 401 and session_cookie(http) is None


def test_password_compare() -> None:
    assert password_matches(PASSWORD, PASSWORD)
    assert not password_matches(PASSWORD + "x", PASSWORD)
    assert not password_matches("", "")


async def test_login_csrf_rejected_without_or_with_wrong_token(url: str) -> None:
    async with client() as http:
        async with http.get(f"{url}/dashboard/login") as resp:
            token = csrf_of(await resp.text())
        attempts = [
            {"password": PASSWORD},  # no token
            {"password": PASSWORD, "csrf": "wrong"},
            {"password": PASSWORD, "csrf": token[:-2] + "xx"},
        ]
        for form in attempts:
            async with http.post(f"{url}/dashboard/login", data=form, allow_redirects=False) as r:
                assert r.status == 403, form
                assert SESSION_COOKIE not in r.cookies
        assert session_cookie(http) is None
    # The right token without its cookie (a cross-site form) is refused too.
    async with client() as other:
        other.cookie_jar.clear()
        async with other.post(
            f"{url}/dashboard/login",
            data={"password": PASSWORD, "csrf": token},
            allow_redirects=False,
        ) as r:
            assert r.status == 403 and session_cookie(other) is None


async def test_logout_csrf_rejected_and_session_kept(url: str) -> None:
    async with client() as http:
        await login(http, url)
        async with http.get(f"{url}/dashboard/") as resp:
            token = csrf_of(await resp.text())
        for form in ({}, {"csrf": "wrong"}):
            async with http.post(f"{url}/dashboard/logout", data=form, allow_redirects=False) as r:
                assert r.status == 403
        async with http.get(f"{url}/dashboard/", allow_redirects=False) as resp:
            assert resp.status == 200  # still logged in: nothing changed
        old = session_cookie(http)
        async with http.post(
            f"{url}/dashboard/logout", data={"csrf": token}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/dashboard/login"
        # The old cookie no longer works, even if replayed.
        assert old is not None
        http.cookie_jar.update_cookies({SESSION_COOKIE: old})
        async with http.get(f"{url}/dashboard/", allow_redirects=False) as resp:
            assert resp.status == 302


async def test_session_expires(url: str, clock: ManualClock) -> None:
    async with client() as http:
        await login(http, url)
        clock.advance(timedelta(hours=11, minutes=59))
        async with http.get(f"{url}/dashboard/", allow_redirects=False) as resp:
            assert resp.status == 200
        clock.advance(timedelta(minutes=2))
        async with http.get(f"{url}/dashboard/", allow_redirects=False) as resp:
            assert resp.status == 302


async def test_group_page_shows_quiet_list_boards_chart_and_empty_states(url: str) -> None:
    async with client() as http:
        await login(http, url)
        async with http.get(f"{url}/dashboard/group/{GROUP_A}") as resp:
            html = await resp.text()
            headers = resp.headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cache-Control"] == "no-store"
    quiet = html[html.index('id="quiet"') : html.index('id="leaderboards"')]
    # The churn radar's list (issue 6): levels and each signal's explanation, staff left out.
    assert "阿杰" in quiet and "高危警报" in quiet and "已经7天没有在群里发言" in quiet
    assert "小白" in quiet and "已经9天没有在群里发言" in quiet
    assert "李老师" not in quiet
    boards = html[html.index('id="leaderboards"') : html.index('id="redemptions"')]
    assert boards.index("小鱼") < boards.index("阿杰")
    assert "暂无待发放的兑换" in html and "暂无进行中的挽回邀请" in html
    assert '<svg id="activity-chart"' in html
    # Nothing is loaded from elsewhere: no scripts, no external URLs.
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"https?://", html)


async def test_names_are_escaped(app: App, clock: ManualClock) -> None:
    from tests.builders import archive_text, local, pair

    await app.pipeline.ingest(
        [pair(archive_text(GROUP_A, "wmX", "hi", local(2026, 11, 2, 9), name="<b>坏人</b>"))]
    )
    clock.set(local(2026, 11, 10, 9))
    async with serve(app) as url, client() as http:
        await login(http, url)
        async with http.get(f"{url}/dashboard/group/{GROUP_A}") as resp:
            html = await resp.text()
    assert "<b>坏人</b>" not in html and "&lt;b&gt;坏人&lt;/b&gt;" in html


async def test_quiet_list_and_chart_series(app: App, clock: ManualClock) -> None:
    await seed_group(app, clock)
    with app.db.session() as session:
        quiet = data.quiet_list(session, app.settings, GROUP_A, TODAY)
        series = data.activity_series(session, GROUP_A, TODAY, 14)
    by_name = {q.name: q for q in quiet}
    # Highest risk first; the teacher is not a learner and never listed. 小白, silent since the
    # start, ranks first: no check-in of their own, so their check-in drop is measured against
    # the group's (against their own zero they used to rank below 阿杰, who faded).
    assert [q.name for q in quiet] == ["小白", "阿杰", "李同学", "小鱼"]
    assert by_name["阿杰"].signals[:2] == ("高危警报", "已经7天没有在群里发言")
    assert (by_name["阿杰"].days_quiet, by_name["阿杰"].never_spoken) == (7, False)
    assert by_name["小白"].never_spoken and by_name["小白"].signals[0] == "高危警报"
    assert by_name["小白"].days_quiet == 9  # learning days since the cohort started on Nov 2
    # 小鱼 is active; only the missing self-introduction fires.
    assert by_name["小鱼"].signals == ("轻度预警", "入群9天还没有做自我介绍")
    assert len(series) == 14 and series[-1].day == TODAY
    counts = {p.day.day: (p.active_members, p.checkins) for p in series}
    assert counts[3] == (4, 2)  # 小鱼, 李同学, 阿杰, the teacher; 小鱼 and 阿杰 checked in
    assert counts[10] == (1, 1)
    assert counts[1] == (0, 0)


async def test_open_offers_are_named_as_the_digest_names_them(app: App, clock: ManualClock) -> None:
    await seed_group(app, clock)
    with app.db.session() as session:
        for tier in ("makeup_card", "retired_tier"):  # a tier since removed from the config
            session.add(
                Offer(
                    cohort_id="c1",
                    chat_id=GROUP_A,
                    member_id="wmJie",
                    tier=tier,
                    level=3,
                    proposed_at=clock.now(),
                )
            )
        session.commit()
        offers = data.open_offers(session, app.settings, GROUP_A)
    assert [o.text.split(" ", 1)[1] for o in offers] == ["额外补卡券", "retired_tier"]
    first = offers[0].text.split(" ", 1)[0].lstrip("#")
    assert offers[0].status == f"待批准：在群里回复「批准 {first}」"  # not the code "proposed"
    assert {o.member_name for o in offers} == {"阿杰"}


async def test_pages_use_the_dates_a_leader_moved(app: App, clock: ManualClock) -> None:
    # 结营 on 11-08 (day 7 of 21), two days before TODAY: both pages say the cohort has ended.
    await seed_group(app, clock)
    with app.db.session() as session:
        cohort_dates.set_dates(session, "c1", "leader1", clock.now(), end=date(2026, 11, 8))
        session.commit()
    async with serve(app) as url, client() as http:
        await login(http, url)
        async with http.get(f"{url}/dashboard/") as resp:
            index_html = await resp.text()
        async with http.get(f"{url}/dashboard/group/{GROUP_A}") as resp:
            group_html = await resp.text()
    assert "已结营" in index_html and "第 9 / 21 天" not in index_html
    assert "已结营" in group_html


async def test_repeated_wrong_passwords_are_throttled(url: str, clock: ManualClock) -> None:
    async with client() as http:
        for _ in range(5):
            assert (await login(http, url, password="guess")).status == 401
        resp = await login(http, url)  # even the right password waits now
        assert resp.status == 429 and session_cookie(http) is None
        clock.advance(timedelta(minutes=16))
        assert (await login(http, url)).status == 303


async def test_page_database_reads_run_off_the_event_loop(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow page must not hold up the callbacks served by the same loop: every page's reads
    run in a worker thread."""
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def recording(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen[name] = threading.get_ident()
            return real(*args, **kwargs)

        return wrapper

    for name in ("learner_count", "members", "activity_series"):
        monkeypatch.setattr(data, name, recording(name, getattr(data, name)))
    async with client() as http:
        await login(http, url)
        for path in ("/dashboard/", f"/dashboard/group/{GROUP_A}"):
            async with http.get(url + path) as resp:
                assert resp.status == 200
        seen_page = dict(seen)
        seen.clear()
        async with http.get(f"{url}/dashboard/group/{GROUP_A}/chart.svg") as resp:
            assert resp.status == 200
    assert set(seen_page) == {"learner_count", "members", "activity_series"}
    assert set(seen) == {"activity_series"}
    assert loop_thread not in {*seen_page.values(), *seen.values()}
