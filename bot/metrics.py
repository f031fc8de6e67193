"""Process metrics in the Prometheus text format (SPEC §15 ``/metrics``).

A deliberately small registry: counters and gauges with label sets, rendered on demand. Modules
declare their metrics at import time (``CALLBACKS = metrics.counter(...)``) and increment them;
``/metrics`` renders :data:`REGISTRY`. Gauges whose value lives in the database (inbox lag, outbox
length) are set by a callback just before rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from threading import Lock

LabelValues = tuple[str, ...]


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.help = help_text
        self.labels = labels
        self._values: dict[LabelValues, float] = {}
        self._lock = Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labels:
            items = [((), 0.0)]
        for key, value in items:
            if self.labels:
                pairs = ",".join(
                    f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{self.name} {_number(value)}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.inc_values(self._key(labels), amount)

    def inc_values(self, key: LabelValues, amount: float = 1.0) -> None:
        """:meth:`inc` with the label values given in order (for a hot path that counts the same
        label set again and again)."""
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {key}")
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Callable[[], None]] = []

    def _add(self, metric: _Metric) -> _Metric:
        existing = self._metrics.get(metric.name)
        if existing is not None:
            if type(existing) is not type(metric) or existing.labels != metric.labels:
                raise ValueError(f"metric {metric.name} declared twice, differently")
            return existing
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Counter:
        return self._add(Counter(name, help_text, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labels))  # type: ignore[return-value]

    def collect_with(self, collector: Callable[[], None]) -> None:
        """Run ``collector`` before each render (to set gauges from the database)."""
        self._collectors.append(collector)

    def render(self) -> str:
        for collector in self._collectors:
            collector()
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].render())
        return "\n".join(lines) + "\n"


REGISTRY = Registry()
counter = REGISTRY.counter
gauge = REGISTRY.gauge

# Declared here so every module increments the same series (SPEC §15).
#: The scheduler increments it once per job run: ``JOB_RUNS.inc(job="digest", outcome="ok")``.
JOB_RUNS = counter(
    "cohortbot_job_runs_total", "Scheduled job runs, by job family and outcome.", ("job", "outcome")
)
#: The nudge sender increments it per nudge sent: ``NUDGES_SENT.inc(channel="private")``.
NUDGES_SENT = counter("cohortbot_nudges_sent_total", "Nudges sent, by channel.", ("channel",))
# -- outbox (bot.wecom.delivery) ---------------------------------------------------------------
OUTBOX_SENT = counter(
    "cohortbot_outbox_sent_total", "Outbox messages WeCom accepted, by channel.", ("channel",)
)
OUTBOX_FAILURES = counter(
    "cohortbot_outbox_failures_total",
    "Failed outbox delivery attempts (retried or final), by channel and reason.",
    ("channel", "reason"),
)
OUTBOX_QUEUE_LENGTH = gauge(
    "cohortbot_outbox_queue_length", "Outbox messages waiting to be sent (pending or claimed)."
)


def set_outbox_queue_length(value: int) -> None:
    """Set the outbox queue-length gauge (called by a collector before rendering)."""
    OUTBOX_QUEUE_LENGTH.set(value)
