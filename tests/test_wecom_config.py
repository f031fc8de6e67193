"""The ``[wecom]`` section and the group keys for sending: defaults and one-line errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.clock import ManualClock
from bot.config import ConfigError, parse_settings
from bot.wecom.api import client_from_settings
from tests.conftest import base_config


def with_group(**keys: Any) -> dict[str, Any]:
    config = copy.deepcopy(base_config())
    config["cohorts"][0]["groups"][0].update(keys)
    return config


def test_defaults() -> None:
    settings = parse_settings(base_config(), env={})
    assert settings.wecom.api_base == "https://qyapi.weixin.qq.com"
    assert (settings.wecom.robot_per_minute, settings.wecom.app_per_member_per_minute) == (20, 30)
    group = settings.cohorts[0].groups[0]
    assert (group.post_via, group.robot_key_env) == ("robot", "")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (with_group(post_via="email"), "cohorts[0].groups[0].post_via: 'email' is not one of"),
        (with_group(robot_key=1), "cohorts[0].groups[0].robot_key: unknown key"),
        (base_config(wecom={"api_base": "qyapi"}), "wecom.api_base: 'qyapi' is not an http(s)"),
        (base_config(wecom={"corp_secret": "x"}), "wecom.corp_secret: unknown key"),
        (
            base_config(wecom={"timeout_seconds": 30, "claim_lease_seconds": 20}),
            "wecom.claim_lease_seconds: 20 is outside 31..",
        ),
    ],
)
def test_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(config, env={})
    assert str(err.value).startswith(message)


def test_client_reads_the_secret_from_the_named_env_var() -> None:
    settings = parse_settings(
        base_config(
            wecom={"corp_id": "ww1", "corp_secret_env": "MY_SECRET", "api_base": "http://x/"}
        ),
        env={},
    )
    clock = ManualClock(datetime(2026, 11, 1, tzinfo=UTC))
    api = client_from_settings(settings, clock, env={"MY_SECRET": "s3"})
    assert (api.api_base, api.corp_id) == ("http://x", "ww1")
    with pytest.raises(ConfigError, match="MY_SECRET is not set"):
        client_from_settings(settings, clock, env={})
