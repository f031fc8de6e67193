"""The teachers' read-only dashboard (SPEC §15) as an aiohttp sub-application.

The server mounts it: ``root.add_subapp("/dashboard", build_dashboard(bot))``. Every page but
the login form needs a session (else a redirect to the login page); the only POSTs are login and
logout, both CSRF-checked. Pages are server-rendered with Jinja2 (autoescaped); the chart is
inline SVG; nothing is loaded from the internet (see the Content-Security-Policy header). Each
page's database reads run in a worker thread, so a slow page never holds up the callbacks.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import jinja2
from aiohttp import web

from bot.clock import Clock
from bot.config import GroupSettings, Settings
from bot.dashboard import data
from bot.dashboard.auth import CSRF_COOKIE, SESSION_COOKIE, Signer, password_matches
from bot.dashboard.chart import activity_svg
from storage import cohort_dates
from storage.db import Database

#: The routes served without a session; every other route is wrapped by ``_login_required``.
PUBLIC_ROUTES = frozenset({"login", "login_post"})
#: Wrong passwords allowed per client address within LOGIN_WINDOW before logins are refused.
MAX_LOGIN_FAILURES = 5
LOGIN_WINDOW = timedelta(minutes=15)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class DashboardState:
    settings: Settings
    db: Database
    clock: Clock
    password: str
    signer: Signer
    templates: jinja2.Environment
    failures: dict[str, list[datetime]] = field(default_factory=dict)

    def throttled(self, client: str) -> bool:
        """Too many recent wrong passwords from ``client`` (forgets old ones)."""
        since = self.clock.now() - LOGIN_WINDOW
        recent = [t for t in self.failures.get(client, []) if t > since]
        self.failures[client] = recent
        return len(recent) >= MAX_LOGIN_FAILURES

    def failed(self, client: str) -> None:
        self.failures.setdefault(client, []).append(self.clock.now())


STATE = web.AppKey("cohortbot_dashboard", DashboardState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardServices(Protocol):
    """What the dashboard needs from the bot: the bot's ``App`` has all three."""

    settings: Settings
    db: Database
    clock: Clock


def build_dashboard(
    services: DashboardServices, env: Mapping[str, str] | None = None
) -> web.Application:
    """The dashboard sub-application, to mount at ``/dashboard``.

    The password comes from the environment variable named by ``[dashboard] password_env``; the
    cookie-signing key from ``secret_env`` (or a random one made now).
    """
    env = os.environ if env is None else env
    cfg = services.settings.dashboard
    secret = env.get(cfg.secret_env, "").encode("utf-8") or secrets.token_bytes(32)
    state = DashboardState(
        settings=services.settings,
        db=services.db,
        clock=services.clock,
        password=env.get(cfg.password_env, ""),
        signer=Signer(secret=secret, session_length=timedelta(hours=cfg.session_hours)),
        templates=jinja2.Environment(
            loader=jinja2.PackageLoader("bot.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        ),
    )
    app = web.Application()
    app[STATE] = state
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", _login_required(index), name="index")
    app.router.add_get("/login", login_form, name="login")
    app.router.add_post("/login", login_post, name="login_post")
    app.router.add_post("/logout", _login_required(logout), name="logout")
    app.router.add_get("/group/{chat_id}", _login_required(group_page), name="group")
    app.router.add_get("/group/{chat_id}/chart.svg", _login_required(group_chart), name="chart")
    # Anything else: the login form first, so that without a session no path tells whether it
    # exists; with one, 404.
    app.router.add_route("*", "/{tail:.*}", _login_required(_not_found), name="other")
    return app


def _state(request: web.Request) -> DashboardState:
    return request.app[STATE]


def _url(request: web.Request, name: str, **parts: str) -> str:
    return str(request.app.router[name].url_for(**parts))


def _session_nonce(request: web.Request) -> str | None:
    state = _state(request)
    return state.signer.session_nonce(request.cookies.get(SESSION_COOKIE), state.clock.now())


def _login_required(handler: Handler) -> Handler:
    """``handler`` behind the login: without a valid session, a redirect to the login form.

    A wrapper per page rather than an aiohttp middleware: a middleware on this sub-application
    makes the parent application run its middleware chain for every request, the WeCom callbacks
    included, which are the requests that must be cheapest.
    """

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if _session_nonce(request) is None:
            raise web.HTTPFound(_url(request, "login"))
        return await handler(request)

    return guarded


async def _not_found(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    nonce = _session_nonce(request)
    base = {
        "index_url": _url(request, "index"),
        "logout_url": _url(request, "logout") if nonce else "",
        "csrf": _state(request).signer.session_csrf(nonce) if nonce else "",
    }
    base.update(context)
    html = _state(request).templates.get_template(template).render(**base)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


def _cookie_path(request: web.Request) -> str:
    return _url(request, "index")


def _see_other(location: str) -> web.Response:
    # A plain response (not a raised HTTPSeeOther) so that cookies can be set on it.
    return web.Response(status=303, headers={"Location": location})


def _forbidden() -> web.HTTPForbidden:
    return web.HTTPForbidden(text="CSRF 校验失败，请刷新页面后重试。")


async def login_form(request: web.Request) -> web.Response:
    """GET /login: the password form, with a fresh login CSRF token."""
    if _session_nonce(request) is not None:
        raise web.HTTPFound(_url(request, "index"))
    return _login_page(request)


def _login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    state = _state(request)
    token = state.signer.new_login_token()
    response = _render(
        request,
        "login.html",
        status=status,
        csrf=token,
        login_url=_url(request, "login_post"),
        configured=bool(state.password),
        password_env=state.settings.dashboard.password_env,
        error=error,
    )
    response.set_cookie(
        CSRF_COOKIE,
        token,
        path=_cookie_path(request),
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    return response


async def login_post(request: web.Request) -> web.StreamResponse:
    """POST /login: check the CSRF token, then the password; start a session."""
    state = _state(request)
    form = await request.post()
    if not state.signer.check_login_token(
        request.cookies.get(CSRF_COOKIE), str(form.get("csrf", ""))
    ):
        raise _forbidden()
    client = request.remote or "?"
    if state.throttled(client):
        return _login_page(request, error="尝试次数过多，请 15 分钟后再试。", status=429)
    if not password_matches(str(form.get("password", "")), state.password):
        state.failed(client)
        return _login_page(request, error="密码不正确。", status=401)
    response = _see_other(_url(request, "index"))
    response.set_cookie(
        SESSION_COOKIE,
        state.signer.new_session(state.clock.now()),
        path=_cookie_path(request),
        max_age=state.settings.dashboard.session_hours * 3600,
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )
    response.del_cookie(CSRF_COOKIE, path=_cookie_path(request))
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /logout: end the session (CSRF-checked)."""
    state = _state(request)
    nonce = _session_nonce(request)
    assert nonce is not None  # the middleware let us in
    form = await request.post()
    if not state.signer.check_session_csrf(nonce, str(form.get("csrf", ""))):
        raise _forbidden()
    state.signer.revoke(nonce)
    response = _see_other(_url(request, "login"))
    response.del_cookie(SESSION_COOKIE, path=_cookie_path(request))
    return response


def _day_text(cohort_day: int, length: int) -> str:
    if cohort_day < 1:
        return f"距开营还有 {1 - cohort_day} 天"
    if cohort_day > length:
        return "已结营"
    return f"第 {cohort_day} / {length} 天"


async def index(request: web.Request) -> web.Response:
    """GET /: every cohort and its groups."""
    state = _state(request)
    urls = {
        group.chat_id: _url(request, "group", chat_id=group.chat_id)
        for cohort in state.settings.cohorts
        for group in cohort.groups
    }
    cohorts = await asyncio.to_thread(_index_cohorts, state, urls)
    return _render(request, "index.html", cohorts=cohorts)


def _index_cohorts(state: DashboardState, urls: Mapping[str, str]) -> list[dict[str, Any]]:
    """The index page's rows (database reads: runs in a worker thread, off the event loop)."""
    now = state.clock.now()
    cohorts = []
    with state.db.session() as session:
        for configured in state.settings.cohorts:
            cohort = cohort_dates.effective(session, configured)
            groups = [
                {
                    "name": group.name or group.chat_id,
                    "url": urls[group.chat_id],
                    "learners": data.learner_count(session, group),
                }
                for group in cohort.groups
            ]
            cohorts.append(
                {
                    "id": cohort.id,
                    "course": cohort.course,
                    "start_date": cohort.start_date,
                    "length_days": cohort.length_days,
                    "day_text": _day_text(
                        cohort.cohort_day(data.today_of(cohort, now)), cohort.length_days
                    ),
                    "groups": groups,
                }
            )
    return cohorts


def _group_or_404(request: web.Request) -> GroupSettings:
    group = _state(request).settings.group(request.match_info["chat_id"])
    if group is None:
        raise web.HTTPNotFound(text="没有这个社群。")
    return group


async def group_page(request: web.Request) -> web.Response:
    """GET /group/{chat_id}: members, quiet list, leaderboards, redemptions, offers, chart."""
    context = await asyncio.to_thread(_group_context, _state(request), _group_or_404(request))
    return _render(request, "group.html", **context)


def _group_context(state: DashboardState, group: GroupSettings) -> dict[str, Any]:
    """The group page's data (database reads: runs in a worker thread, off the event loop)."""
    days = state.settings.dashboard.chart_days
    with state.db.session() as session:
        # 开营/结营 move the day count, the stages and the last day, as everywhere else.
        cohort = cohort_dates.effective(session, state.settings.cohort(group.cohort_id))
        today = data.today_of(cohort, state.clock.now())
        members = data.members(session, state.settings, group, today)
        return {
            "group_name": group.name or group.chat_id,
            "cohort": cohort,
            "today": today,
            "day_text": _day_text(cohort.cohort_day(today), cohort.length_days),
            "members": members,
            "quiet": data.quiet_list(session, state.settings, group.chat_id, today),
            "boards": data.leaderboards(session, state.settings, members, cohort.id),
            "redemptions": data.pending_redemptions(session, state.settings, group.chat_id),
            "offers": data.open_offers(session, state.settings, group.chat_id),
            "chart": activity_svg(data.activity_series(session, group.chat_id, today, days)),
            "chart_days": days,
        }


async def group_chart(request: web.Request) -> web.Response:
    """GET /group/{chat_id}/chart.svg: the activity chart alone (for saving or embedding)."""
    svg = await asyncio.to_thread(_chart_svg, _state(request), _group_or_404(request))
    return web.Response(text=svg, content_type="image/svg+xml", charset="utf-8")


def _chart_svg(state: DashboardState, group: GroupSettings) -> str:
    """The chart document (database reads: runs in a worker thread, off the event loop)."""
    cohort = state.settings.cohort(group.cohort_id)
    today = data.today_of(cohort, state.clock.now())
    with state.db.session() as session:
        points = data.activity_series(
            session, group.chat_id, today, state.settings.dashboard.chart_days
        )
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + str(activity_svg(points))
