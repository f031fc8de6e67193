"""The [cards] and [dashboard] settings and the cohort slogan: defaults, values, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import DEFAULT_CARD_SLOGAN, ConfigError, load_settings, parse_settings
from tests.conftest import base_config

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def test_defaults() -> None:
    settings = parse_settings(base_config(), env={})
    assert settings.cards.font_path == "" and settings.cards.default_slogan == DEFAULT_CARD_SLOGAN
    assert settings.dashboard.password_env == "COHORTBOT_DASHBOARD_PASSWORD"
    assert settings.dashboard.chart_days == 14
    assert settings.cohort("c1").slogan == ""


def test_values_and_cohort_slogan() -> None:
    config = base_config(
        cards={"font_path": "/fonts/x.ttc", "default_slogan": "加油"},
        dashboard={"password_env": "PW", "quiet_days": 5, "chart_days": 28, "session_hours": 2},
    )
    config["cohorts"][0]["slogan"] = "21天，遇见更好的自己"
    settings = parse_settings(config, env={})
    assert settings.cards.font_path == "/fonts/x.ttc"
    assert settings.dashboard.password_env == "PW" and settings.dashboard.session_hours == 2
    assert settings.dashboard.chart_days == 28
    assert not hasattr(settings.dashboard, "quiet_days")  # read for old configs, not used
    assert settings.cohort("c1").slogan == "21天，遇见更好的自己"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"cards": {"font": "x"}}, "cards.font: unknown key (did you mean 'font_path'?)"),
        ({"dashboard": {"quiet_days": 0}}, "dashboard.quiet_days: 0 is outside 1..365"),
        ({"dashboard": {"password_env": 3}}, "dashboard.password_env: expected a string"),
    ],
)
def test_errors_name_the_key(overrides: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_settings(base_config(**overrides), env={})
    assert str(exc.value).startswith(error)


def test_example_config_documents_the_new_sections() -> None:
    settings = load_settings(EXAMPLE, env={})
    assert settings.cards.default_slogan == DEFAULT_CARD_SLOGAN
    assert settings.dashboard.chart_days == 14
