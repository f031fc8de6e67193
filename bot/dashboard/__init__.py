"""The teachers' read-only dashboard (SPEC §15): mount ``build_dashboard(bot)`` at /dashboard."""

from bot.dashboard.web import build_dashboard

__all__ = ["build_dashboard"]
