"""A small renderer for the TOML script files in this folder (STYLE habit 10: words are data).

A script file maps script names to one template or a list of variants; templates use named
placeholders (``{name}``, ``{days}``). :func:`render` picks a variant deterministically from a
seed (the same update renders the same words when it is processed again) and fills the fields.
Field values are inserted as they are: a user name containing ``{x}`` is text, never a placeholder.
"""

from __future__ import annotations

import hashlib
import string
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


class ScriptError(LookupError):
    """A missing script or a template that names a field nobody gave."""


@cache
def load(library: str) -> dict[str, tuple[str, ...]]:
    """The scripts of ``<library>.toml`` in this folder: name -> variants."""
    data = tomllib.loads((HERE / f"{library}.toml").read_text("utf-8"))
    out: dict[str, tuple[str, ...]] = {}
    for name, value in data.items():
        variants = [value] if isinstance(value, str) else value
        if (
            not isinstance(variants, list)
            or not variants
            or not all(isinstance(v, str) for v in variants)
        ):
            raise ScriptError(f"{library}.{name}: expected a string or a list of strings")
        out[name] = tuple(variants)
    return out


def fields_of(template: str) -> set[str]:
    """The placeholder names a template uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def render(library: str, script: str, /, seed: str = "", **fields: Any) -> str:
    """Render ``script`` of ``library``, choosing the variant by ``seed``."""
    variants = load(library).get(script)
    if not variants:
        raise ScriptError(f"{library}.{script}: no such script")
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    template = variants[int.from_bytes(digest[:4], "big") % len(variants)]
    missing = fields_of(template) - set(fields)
    if missing:
        raise ScriptError(f"{library}.{script}: no value for {sorted(missing)}")
    return template.format_map(fields)
