"""Pausing the cyclic garbage collector around bulk passes: paused meanwhile, restored after,
and the cycles a batch leaves still collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from bot import importer
from bot.app import App
from bot.collector import collect_pass_garbage, collector_paused, frozen_and_paused
from bot.importer import import_file
from tests.builders import archive_text, jsonl, local
from tests.conftest import GROUP_A


def test_collector_paused_during_a_pass_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # a pass nested in another (the digest's radar)
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with collector_paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()

    @collector_paused()
    def during() -> bool:
        return gc.isenabled()

    assert during() is False
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_a_frozen_pass_collects_its_batches_cycles_when_asked() -> None:
    frozen_before = gc.get_freeze_count()
    with frozen_and_paused():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > frozen_before  # the process's objects, out of sight
        node = _Node()
        alive = weakref.ref(node)
        del node
        kept = [[] for _ in range(3 * gc.get_threshold()[0])]  # enough to set it off
        assert kept
        assert alive() is not None  # paused: not collected meanwhile
        collect_pass_garbage()
        assert alive() is None
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen_before


async def test_an_import_leaves_the_collector_as_it_found_it(app: App, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await import_file(app, tmp_path / "missing.jsonl")
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


async def test_an_import_collects_cyclic_garbage_every_so_many_lines(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [archive_text(GROUP_A, "wmU1", f"第{i}条", local(2026, 11, 2, 20, i)) for i in range(7)]
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl(items), encoding="utf-8")
    collections: list[bool] = []
    monkeypatch.setattr(importer, "COLLECT_EVERY", 4)
    monkeypatch.setattr(
        importer, "collect_pass_garbage", lambda: collections.append(gc.isenabled())
    )
    report = await import_file(app, path, batch_size=2)
    assert report.imported == 7
    assert collections == [False]  # after the second batch (4 lines), paused meanwhile
    assert gc.isenabled()
