"""The churn radar, private nudges, offers and the digest's time (SPEC §7, §8, §10)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.config.reader import ConfigError, Reader, read_hhmm, read_span


@dataclass(frozen=True)
class RadarSettings:
    """Churn radar thresholds (SPEC §7), section ``[radar]``."""

    silence_days: int = 3
    missed_checkin_days: int = 2
    checkin_drop_ratio: float = 0.5
    volume_ratio: float = 0.3
    broken_streak_min: int = 3
    intro_by_day: int = 2
    min_completion: float = 0.5
    min_homework_rate: float = 0.5
    clear_after_active_days: int = 2
    ignored_nudge_hours: int = 72


@dataclass(frozen=True)
class OfferTier:
    """One rung of the offers ladder (seed 000: five tiers)."""

    id: str
    name: str
    min_level: int  # 1 light, 2 medium, 3 high
    text: str
    makeup_cards: int = 0  # extra 补卡 the learner gets once the offer is sent


DEFAULT_OFFERS: tuple[OfferTier, ...] = (
    OfferTier(
        "makeup_card", "额外补卡券", 2, "送你一张额外的补卡券，落下的那天可以补上，不着急。", 1
    ),
    OfferTier(
        "material_pack", "学习资料包", 2, "给你准备了一份本课的精华资料包，碎片时间翻一翻就好。"
    ),
    OfferTier(
        "review_1v1",
        "1对1作业点评",
        3,
        "老师可以和你约一次 1 对 1 的作业点评，帮你把卡住的地方理一理。",
    ),
    OfferTier(
        "extend_access",
        "延长课程有效期",
        3,
        "这期课程的回看有效期可以为你延长，按自己的节奏学完就好。",
    ),
    OfferTier("coupon", "下期优惠券", 3, "下一期训练营给你留了一张优惠券，什么时候想继续都欢迎。"),
)


@dataclass(frozen=True)
class NudgeSettings:
    """Private nudges and the teacher digest (SPEC §8, §10), section ``[nudges]``."""

    weekday_window: tuple[tuple[int, int], tuple[int, int]] = ((19, 0), (21, 30))
    weekend_window: tuple[tuple[int, int], tuple[int, int]] = ((10, 0), (20, 0))
    quiet_hours: tuple[tuple[int, int], tuple[int, int]] = ((22, 30), (7, 30))
    min_days_between: int = 3
    per_customer_daily_limit: int = 1
    digest_time: tuple[int, int] = (21, 40)
    enabled: bool = True
    postcards: tuple[str, ...] = ()
    offers: tuple[OfferTier, ...] = DEFAULT_OFFERS
    #: Approved offers still go out this many days after a cohort's last day (then they lapse).
    offer_days_after_end: int = 7


def parse_radar(r: Reader) -> RadarSettings:
    d = RadarSettings()

    def ratio(name: str, default: float) -> float:
        value = r._get(name, False)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ConfigError(f"{r.key(name)}: expected a number in 0..1, got {value!r}")
        return float(value)

    out = RadarSettings(
        silence_days=r.int_("silence_days", d.silence_days, 1, 365),
        missed_checkin_days=r.int_("missed_checkin_days", d.missed_checkin_days, 1, 365),
        checkin_drop_ratio=ratio("checkin_drop_ratio", d.checkin_drop_ratio),
        volume_ratio=ratio("volume_ratio", d.volume_ratio),
        broken_streak_min=r.int_("broken_streak_min", d.broken_streak_min, 1, 365),
        intro_by_day=r.int_("intro_by_day", d.intro_by_day, 1, 365),
        min_completion=ratio("min_completion", d.min_completion),
        min_homework_rate=ratio("min_homework_rate", d.min_homework_rate),
        clear_after_active_days=r.int_("clear_after_active_days", d.clear_after_active_days, 1, 30),
        ignored_nudge_hours=r.int_("ignored_nudge_hours", d.ignored_nudge_hours, 1, 720),
    )
    r.finish()
    return out


def parse_nudges(r: Reader) -> NudgeSettings:
    offers = []
    for o in r.tables("offers"):
        offers.append(
            OfferTier(
                id=o.str_("id"),
                name=o.str_("name"),
                min_level=o.int_("min_level", 2, 1, 3),
                text=o.str_("text"),
                makeup_cards=o.int_("makeup_cards", 0, 0, 10),
            )
        )
        o.finish()
    out = NudgeSettings(
        weekday_window=read_span(r, "weekday_window", "19:00-21:30"),
        weekend_window=read_span(r, "weekend_window", "10:00-20:00"),
        quiet_hours=read_span(r, "quiet_hours", "22:30-07:30"),
        min_days_between=r.int_("min_days_between", 3, 0, 365),
        per_customer_daily_limit=r.int_("per_customer_daily_limit", 1, 0, 100),
        digest_time=read_hhmm(r, "digest_time", "21:40"),
        enabled=r.bool_("enabled", True),
        postcards=tuple(r.str_list("postcards", [])),
        offers=tuple(offers) if offers else DEFAULT_OFFERS,
        offer_days_after_end=r.int_("offer_days_after_end", 7, 0, 60),
    )
    r.finish()
    return out
