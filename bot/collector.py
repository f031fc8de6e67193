"""Cyclic garbage collection around bulk passes (the nightly radar, an import).

A bulk pass allocates hundreds of thousands of objects that live until it (or its batch) ends;
the collector, triggered by allocations, walks them again and again: about a second of the
nightly radar pass at 1,000 groups, and 5-7% of an import. These helpers pause it for the pass
and leave its state as they found it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause automatic cyclic garbage collection meanwhile (also as a decorator,
    ``@collector_paused()``).

    Nothing is lost: collection resumes afterwards, and a pass nested in another leaves the outer
    one's state alone.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def frozen_and_paused() -> Iterator[None]:
    """:func:`collector_paused`, with the objects the process already had moved out of the
    collector's sight (``gc.freeze``), for a pass that calls :func:`collect_pass_garbage` itself
    every so many batches.

    Freezing changes only when garbage is found, never what: the frozen objects go back to the
    collector afterwards.
    """
    gc.freeze()
    try:
        with collector_paused():
            yield
    finally:
        gc.unfreeze()


def collect_pass_garbage() -> None:
    """Collect the cycles a pass's batches left (a failed batch's traceback, say): the walk
    covers only the objects made since the freeze that are still alive."""
    gc.collect()
