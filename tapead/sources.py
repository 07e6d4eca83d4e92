"""Digests of tapead's own source, by package: what cache keys hash so they cannot go stale.

A derived tape or a kernel stored on disk is valid only for the code that made it. Rather than a hand-kept list
of files (which misses the module someone adds or moves), a key hashes every module of the packages that do the
work: an edit anywhere in them, a moved module or a new one changes the key.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent  # the tapead package
_memo: dict[tuple, str] = {}


def modules(*packages: str) -> list[Path]:
    """Every module of the given subpackages (e.g. ``"transforms"``) and top-level modules (e.g. ``"errors"``),
    in a fixed order."""
    out = []
    for name in packages:
        folder = ROOT / name
        out.extend(sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{name}.py"])
    return out


def digest(*packages: str) -> str:
    """sha256 of the path (relative to the package) and the bytes of every module of ``packages``."""
    key = tuple(packages)
    found = _memo.get(key)
    if found is None:
        h = hashlib.sha256()
        for path in modules(*packages):
            h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
        found = _memo[key] = h.hexdigest()
    return found
