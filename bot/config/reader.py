"""Config reading: :class:`ConfigError` and :class:`Reader`, which reads one TOML table and names
the key in every error, plus the small typed readers the sections share.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from datetime import date, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: What an environment variable's name may look like (POSIX: letters, digits, underscores).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """A config problem, already phrased as one line for the operator."""


class Reader:
    """Reads one TOML table, remembering its path so errors name the key."""

    def __init__(self, data: Mapping[str, Any], path: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path or 'config'}: expected a table")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str, required: bool) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise ConfigError(f"{self.key(name)}: missing")
            return None
        return self.data[name]

    def env_name(self, name: str, default: str | None = None) -> str:
        """The name of an environment variable (``*_env`` settings), never its value: a secret
        pasted here by mistake would otherwise end up in the logs ("variable sk-… is not set")."""
        value = self.str_(name, default)
        if value and not ENV_NAME.fullmatch(value):
            raise ConfigError(
                f"{self.key(name)}: expected the name of an environment variable (A-Z, 0-9, _),"
                " not its value"
            )
        return value

    def str_(self, name: str, default: str | None = None) -> str:
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.key(name)}: expected a string, got {value!r}")
        return value

    def int_(
        self, name: str, default: int | None = None, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._get(name, default is None)
        if value is None:
            assert default is not None
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected a whole number, got {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{self.key(name)}: {value} is outside {lo}..{hi}")
        return value

    def bool_(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false, got {value!r}")
        return value

    def date_(self, name: str) -> date:
        value = self._get(name, True)
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"{self.key(name)}: {value!r} is not a date (YYYY-MM-DD)") from None

    def tz(self, name: str, default: str) -> ZoneInfo:
        value = self.str_(name, default)
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{self.key(name)}: unknown timezone {value!r}") from None

    def list_(self, name: str, default: list[Any] | None = None) -> list[Any]:
        value = self._get(name, default is None)
        if value is None:
            return list(default or [])
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(name)}: expected a list, got {value!r}")
        return value

    def str_list(self, name: str, default: list[str] | None = None) -> list[str]:
        values = self.list_(name, default)
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise ConfigError(f"{self.key(name)}[{i}]: expected a string, got {v!r}")
        return values

    def regex_list(self, name: str, default: list[str]) -> tuple[re.Pattern[str], ...]:
        out = []
        for i, pattern in enumerate(self.str_list(name, default)):
            try:
                out.append(re.compile(pattern))
            except re.error as exc:
                raise ConfigError(
                    f"{self.key(name)}[{i}]: regex {pattern!r} does not compile: {exc}"
                ) from None
        return tuple(out)

    def table(self, name: str, required: bool = False) -> Reader:
        value = self._get(name, required)
        return Reader(value if value is not None else {}, self.key(name))

    def tables(self, name: str) -> Iterator[Reader]:
        for i, item in enumerate(self.list_(name, [])):
            yield Reader(item, f"{self.key(name)}[{i}]")

    def finish(self) -> None:
        """Refuse keys nobody read: a typo should not silently fall back to a default."""
        for name in self.data:
            if name not in self.used:
                near = difflib.get_close_matches(name, self.used, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{self.key(name)}: unknown key{hint}")


def read_time(r: Reader, name: str, default: time) -> time:
    value = r.str_(name, default.strftime("%H:%M"))
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time (HH:MM)") from None


def read_float(r: Reader, name: str, default: float) -> float:
    value = r.data.get(name, default)
    r.used.add(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{r.key(name)}: expected a positive number, got {value!r}")
    return float(value)


def read_hhmm(r: Reader, name: str, default: str) -> tuple[int, int]:
    value = r.str_(name, default)
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time (HH:MM)")
    return int(m.group(1)), int(m.group(2))


def read_span(r: Reader, name: str, default: str) -> tuple[tuple[int, int], tuple[int, int]]:
    value = r.str_(name, default)
    parts = value.split("-")
    m = [re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", p) for p in parts]
    if len(parts) != 2 or not all(m):
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time span (HH:MM-HH:MM)")
    a, b = (
        (int(x.group(1)), int(x.group(2)))  # type: ignore[union-attr]
        for x in m
    )
    if a[0] > 23 or b[0] > 24 or a[1] > 59 or b[1] > 59:
        raise ConfigError(f"{r.key(name)}: {value!r} is not a time span (HH:MM-HH:MM)")
    return a, b


def read_choice(r: Reader, name: str, choices: tuple[str, ...]) -> str:
    value = r.str_(name, choices[0])
    if value not in choices:
        raise ConfigError(f"{r.key(name)}: {value!r} is not one of {', '.join(choices)}")
    return value


def read_fraction(r: Reader, name: str, default: float) -> float:
    value = r.data.get(name, default)
    r.used.add(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{r.key(name)}: expected a number in 0..1, got {value!r}")
    return float(value)


def read_optional_date(r: Reader, name: str) -> date | None:
    return r.date_(name) if name in r.data else None
