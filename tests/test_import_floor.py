"""``bench/import_floor.py`` measures the per-message minimum of an import; its figure only means
something while it counts what the real import counts."""

from __future__ import annotations

from pathlib import Path

from bench.import_floor import START, measure, real_totals
from bench.import_throughput import generate


def test_the_floor_counts_what_the_real_import_counts(tmp_path: Path) -> None:
    source = tmp_path / "chat.jsonl"
    generate(source, 600, 6, START)
    lines, _seconds, floor = measure(source, 6, tmp_path / "floor.db")
    assert lines == 600
    messages, chars, checkins, rows = floor
    assert messages == 600 and checkins > 50 and chars > 5_000 and rows > 300
    assert real_totals(source, 6, tmp_path / "real.db") == floor
