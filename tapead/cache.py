"""The on-disk kernel cache: compiled object files keyed by IR, optimisation level, LLVM and host CPU.

Location: ``$TAPEAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/tapead``, else ``~/.cache/tapead``; ``TAPEAD_CACHE=0``
turns it off. An entry is one file ``KEY.tko``: the magic b"TAPEADKO", the SHA-256 of the object bytes, then the
object. Entries are written to a temporary file in the same directory and renamed into place, so concurrent
writers never leave a partial entry; an entry whose checksum does not match is removed and counts as a miss.
The cache is best effort: a directory that cannot be written only means no caching.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

MAGIC = b"TAPEADKO"
SUFFIX = ".tko"
FORMAT = 1


def enabled() -> bool:
    """False when the environment variable TAPEAD_CACHE is '0' (or 'false', 'no', 'off')."""
    return os.environ.get("TAPEAD_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """Where entries live (read from the environment at each call)."""
    if os.environ.get("TAPEAD_CACHE_DIR"):
        return Path(os.environ["TAPEAD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tapead"


def key(ir: str, opt: int, cpu: str | None = None, features: str | None = None) -> str:
    """The entry name for IR compiled at ``opt`` for the host CPU (or ``cpu``/``features``) by this LLVM and tapead."""
    from . import __version__
    if cpu is None:
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    h = hashlib.sha256()
    for part in (f"tapead-kernel-cache {FORMAT}", __version__, llvmlite.__version__,
                 ".".join(map(str, llvm.llvm_version_info)), llvm.get_process_triple(), cpu, features or "",
                 str(opt), ir):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _path(k: str) -> Path:
    if not (len(k) == 64 and all(c in "0123456789abcdef" for c in k)):
        raise ValueError(f"cache key {k!r} is not a key made by tapead.cache.key")
    return directory() / (k + SUFFIX)


def get(k: str) -> bytes | None:
    """The object file stored under ``k``, or None (missing, disabled, unreadable or damaged: then removed)."""
    if not enabled():
        return None
    path = _path(k)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    data = blob[len(MAGIC) + 32:]
    if blob[:len(MAGIC)] == MAGIC and hashlib.sha256(data).digest() == blob[len(MAGIC):len(MAGIC) + 32]:
        return data
    try:
        path.unlink()
    except OSError:
        pass
    return None


def put(k: str, data: bytes) -> None:
    """Store ``data`` under ``k`` atomically (temporary file + rename); does nothing if disabled or unwritable."""
    if not enabled():
        return
    path = _path(k)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + hashlib.sha256(data).digest() + data)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _entries() -> list[Path]:
    try:
        return [p for p in directory().iterdir() if p.suffix == SUFFIX and not p.name.startswith(".")]
    except OSError:
        return []


def info() -> dict:
    """``{'location', 'enabled', 'entries', 'bytes'}`` of the cache."""
    entries = _entries()
    size = 0
    for p in entries:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    return {"location": str(directory()), "enabled": enabled(), "entries": len(entries), "bytes": size}


def clear() -> int:
    """Remove every entry (and leftover temporary files); returns how many entries were removed."""
    removed = 0
    for p in _entries():
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    try:
        for p in directory().glob(".tmp-*" + SUFFIX):
            p.unlink()
    except OSError:
        pass
    return removed


def engine_from_object(data: bytes, tm):
    """An MCJIT engine running an object file emitted for ``tm``; keep it alive while its functions are used."""
    module = llvm.parse_assembly("")
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    engine = llvm.create_mcjit_compiler(module, tm)
    engine.add_object_file(llvm.ObjectFileRef.from_data(bytes(data)))
    engine.finalize_object()
    return engine


def build_engine(ir: str, tm, opt: int) -> tuple[object, bool]:
    """``(engine, hit)`` for IR: from the cache when possible, else optimised, emitted once, stored and loaded.

    Machine code is generated once either way (the object is emitted and loaded into the engine), so a miss
    costs about what a plain JIT compile costs, and a hit skips LLVM's optimisation and code generation.
    """
    from .jit import optimise
    k = key(ir, opt) if enabled() else None
    data = get(k) if k else None
    hit = data is not None
    if not hit:
        data = tm.emit_object(optimise(ir, tm, opt))
        if k:
            put(k, data)
    return engine_from_object(data, tm), hit
