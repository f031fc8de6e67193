"""The WeCom side (SPEC §1, §12): the server API and outbound limits, the callback server and its
doors, the archive SDK and the AI bot's long connection.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from bot.config.reader import ConfigError, Reader, read_float


@dataclass(frozen=True)
class WecomSettings:
    """The WeCom server API (``[wecom]``): where it is, credentials by env var name, and the
    outbox's retry and rate-limit policy."""

    api_base: str = "https://qyapi.weixin.qq.com"
    corp_id: str = ""
    corp_secret_env: str = "COHORTBOT_WECOM_SECRET"
    agent_id: int = 0
    timeout_seconds: float = 10.0
    token_margin_seconds: int = 300
    claim_lease_seconds: int = 120
    max_attempts: int = 12
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 900.0
    robot_per_minute: int = 20
    app_per_member_per_minute: int = 30


@dataclass(frozen=True)
class DoorSecrets:
    """One callback door: the NAMES of the environment variables holding its token and
    EncodingAESKey (the values never live in the file), and its route."""

    path: str
    token_env: str
    aes_key_env: str

    def secrets(self, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """(token, EncodingAESKey) from the environment, or None when the door is not set up."""
        env = os.environ if env is None else env
        token, key = env.get(self.token_env, ""), env.get(self.aes_key_env, "")
        return (token, key) if token and key else None


@dataclass(frozen=True)
class ServerSettings:
    """``cohortbot run``: where it listens and how its callback doors check their input."""

    host: str = "127.0.0.1"
    port: int = 8080
    corp_id: str = ""  # the app callback's ReceiveId
    max_body_bytes: int = 64 * 1024
    timestamp_window_seconds: int = 300
    commit_delay_ms: int = 2
    inbox_batch: int = 200
    inbox_idle_ms: int = 20
    inbox_max_lag_ms: int = 2000
    inbox_slice_ms: int = 5
    inbox_journal: bool = True
    aibot: DoorSecrets = DoorSecrets(
        "/wecom/aibot", "COHORTBOT_AIBOT_TOKEN", "COHORTBOT_AIBOT_AES_KEY"
    )
    robot: DoorSecrets = DoorSecrets(
        "/wecom/robot", "COHORTBOT_ROBOT_TOKEN", "COHORTBOT_ROBOT_AES_KEY"
    )
    app: DoorSecrets = DoorSecrets("/wecom/app", "COHORTBOT_APP_TOKEN", "COHORTBOT_APP_AES_KEY")


@dataclass(frozen=True)
class ArchiveSettings:
    """The message-archive poller (SPEC §1 door 4); off unless ``enabled``."""

    enabled: bool = False
    sdk_path: str = ""  # path to libWeWorkFinanceSdk_C.so ("": the one wecom-audit bundles)
    secret_env: str = "COHORTBOT_ARCHIVE_SECRET"
    private_key_env: str = "COHORTBOT_ARCHIVE_PRIVATE_KEY"  # PEM text (or a path to it)
    proxy: str = ""  # socks5://host:port or http://host:port for GetChatData ("": none)
    proxy_password_env: str = "COHORTBOT_ARCHIVE_PROXY_PASSWORD"  # user:password, if needed
    poll_seconds: int = 60
    batch: int = 1000


@dataclass(frozen=True)
class AibotWsSettings:
    """The AI-bot long connection (PROTOCOL.md §1); off unless ``enabled``."""

    enabled: bool = False
    url: str = "wss://openws.work.weixin.qq.com"
    bot_id: str = ""
    secret_env: str = "COHORTBOT_AIBOT_SECRET"
    ping_seconds: float = 30.0
    max_backoff_seconds: float = 60.0


def parse_door(r: Reader, default: DoorSecrets) -> DoorSecrets:
    door = DoorSecrets(
        path=r.str_("path", default.path),
        token_env=r.env_name("token_env", default.token_env),
        aes_key_env=r.env_name("aes_key_env", default.aes_key_env),
    )
    if not door.path.startswith("/"):
        raise ConfigError(f"{r.key('path')}: must start with '/'")
    r.finish()
    return door


def parse_server(r: Reader) -> ServerSettings:
    d = ServerSettings()
    server = ServerSettings(
        host=r.str_("host", d.host),
        port=r.int_("port", d.port, 0, 65535),
        corp_id=r.str_("corp_id", d.corp_id),
        max_body_bytes=r.int_("max_body_bytes", d.max_body_bytes, 1024, 16 * 1024 * 1024),
        timestamp_window_seconds=r.int_(
            "timestamp_window_seconds", d.timestamp_window_seconds, 0, 86400
        ),
        commit_delay_ms=r.int_("commit_delay_ms", d.commit_delay_ms, 0, 1000),
        inbox_batch=r.int_("inbox_batch", d.inbox_batch, 1, 10000),
        inbox_idle_ms=r.int_("inbox_idle_ms", d.inbox_idle_ms, 0, 10000),
        inbox_max_lag_ms=r.int_("inbox_max_lag_ms", d.inbox_max_lag_ms, 0, 600000),
        inbox_slice_ms=r.int_("inbox_slice_ms", d.inbox_slice_ms, 1, 10000),
        inbox_journal=r.bool_("inbox_journal", d.inbox_journal),
        aibot=parse_door(r.table("aibot"), d.aibot),
        robot=parse_door(r.table("robot"), d.robot),
        app=parse_door(r.table("app"), d.app),
    )
    r.finish()
    return server


def parse_archive(r: Reader) -> ArchiveSettings:
    d = ArchiveSettings()
    archive = ArchiveSettings(
        enabled=r.bool_("enabled", d.enabled),
        sdk_path=r.str_("sdk_path", d.sdk_path),
        secret_env=r.env_name("secret_env", d.secret_env),
        private_key_env=r.env_name("private_key_env", d.private_key_env),
        proxy=r.str_("proxy", d.proxy),
        proxy_password_env=r.env_name("proxy_password_env", d.proxy_password_env),
        poll_seconds=r.int_("poll_seconds", d.poll_seconds, 1, 86400),
        batch=r.int_("batch", d.batch, 1, 1000),
    )
    r.finish()
    return archive


def parse_aibot_ws(r: Reader) -> AibotWsSettings:
    d = AibotWsSettings()
    ws = AibotWsSettings(
        enabled=r.bool_("enabled", d.enabled),
        url=r.str_("url", d.url),
        bot_id=r.str_("bot_id", d.bot_id),
        secret_env=r.env_name("secret_env", d.secret_env),
        ping_seconds=read_float(r, "ping_seconds", d.ping_seconds),
        max_backoff_seconds=read_float(r, "max_backoff_seconds", d.max_backoff_seconds),
    )
    r.finish()
    return ws


def parse_wecom(r: Reader) -> WecomSettings:
    d = WecomSettings()
    timeout = r.int_("timeout_seconds", int(d.timeout_seconds), 1, 120)
    settings = WecomSettings(
        api_base=r.str_("api_base", d.api_base).rstrip("/"),
        corp_id=r.str_("corp_id", d.corp_id),
        corp_secret_env=r.env_name("corp_secret_env", d.corp_secret_env),
        agent_id=r.int_("agent_id", d.agent_id, 0),
        timeout_seconds=float(timeout),
        token_margin_seconds=r.int_("token_margin_seconds", d.token_margin_seconds, 0, 3600),
        claim_lease_seconds=r.int_("claim_lease_seconds", d.claim_lease_seconds, timeout + 1),
        max_attempts=r.int_("max_attempts", d.max_attempts, 1, 100),
        backoff_base_seconds=float(r.int_("backoff_base_seconds", 2, 1, 3600)),
        backoff_max_seconds=float(r.int_("backoff_max_seconds", 900, 1, 86400)),
        robot_per_minute=r.int_("robot_per_minute", d.robot_per_minute, 1, 1000),
        app_per_member_per_minute=r.int_(
            "app_per_member_per_minute", d.app_per_member_per_minute, 1, 1000
        ),
    )
    if not settings.api_base.startswith(("http://", "https://")):
        raise ConfigError(f"{r.key('api_base')}: {settings.api_base!r} is not an http(s) URL")
    r.finish()
    return settings
