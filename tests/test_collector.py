"""Pausing the cyclic garbage collector around bulk passes: paused meanwhile, restored after,
and the cycles a batch leaves still collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from bot.app import App
from bot.collector import collect_pass_garbage, collector_paused, frozen_and_paused
from bot.importer import import_file


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
