"""The on-disk kernel cache: compiled object files keyed by IR, optimisation level, LLVM and host CPU.

Location: ``$TAPEAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/tapead``, else ``~/.cache/tapead``; ``TAPEAD_CACHE=0``
turns it off. An entry is one file ``KEY.tko`` (format 2, integers little-endian)::

    magic b"TAPEADKO" | format uint32 (2) | header length H uint32 | header: H bytes of UTF-8 JSON | object |
    SHA-256 of every byte before it

The header names what the object was made from: its key, the tapead, llvmlite and LLVM versions, the target
triple, CPU name and features, the optimisation level, the SHA-256 of the IR and the functions the IR defines
(the kernel kind). A read checks the checksum, then that the header describes exactly what was asked: an entry
copied over another key's file, damaged, truncated or from another build is a miss (and is removed), never
machine code run in the wrong place.

Trust: the cache holds machine code that runs in this process, so its directory is trusted like
site-packages. Only a directory owned by the current user and not writable by group or others is used (anything
else: caching off for that directory, with one warning); only regular files of at most ``MAX_ENTRY`` bytes are
read (opened without following symlinks and without blocking, so a FIFO or a link to a device is a miss).
Entries are written to a temporary file in the same directory and renamed into place, so concurrent writers
never leave a partial entry. The cache is best effort: a directory that cannot be written only means no caching.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import struct
import tempfile
import warnings
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

MAGIC = b"TAPEADKO"
SUFFIX = ".tko"
FORMAT = 2
MAX_ENTRY = 1 << 30  # bytes; an object file for a 10-million-op kernel is a few hundred MB
MAX_HEADER = 1 << 16
_PREFIX = struct.Struct("<8sII")
_DIGEST = 32
_warned: set[str] = set()
_DEFINE = re.compile(r"^define\b[^@\n]*@([\w.$]+)\(", re.M)


def enabled() -> bool:
    """False when the environment variable TAPEAD_CACHE is '0' (or 'false', 'no', 'off')."""
    return os.environ.get("TAPEAD_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """Where entries live (read from the environment at each call)."""
    if os.environ.get("TAPEAD_CACHE_DIR"):
        return Path(os.environ["TAPEAD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tapead"


def _host() -> tuple[str, str]:
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def _identity(cpu: str, features: str) -> dict:
    """What, besides the IR and the optimisation level, decides the machine code."""
    from ..version import __version__
    return {"format": FORMAT, "tapead": __version__, "llvmlite": llvmlite.__version__,
            "llvm": ".".join(map(str, llvm.llvm_version_info)), "triple": llvm.get_process_triple(),
            "cpu": cpu, "features": features or ""}


def key(ir: str, opt: int, cpu: str | None = None, features: str | None = None) -> str:
    """The entry name for IR compiled at ``opt`` for the host CPU (or ``cpu``/``features``) by this LLVM and tapead."""
    if cpu is None:
        cpu, features = _host()
    ident = _identity(cpu, features or "")
    h = hashlib.sha256()
    for part in (f"tapead-kernel-cache {FORMAT}", ident["tapead"], ident["llvmlite"], ident["llvm"], ident["triple"],
                 cpu, features or "", str(opt), ir):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def header(k: str, ir: str | None = None, opt: int | None = None) -> dict:
    """The header an entry for key ``k`` must carry (host CPU); ``ir`` and ``opt`` bind it to its source too."""
    h = {"key": k, **_identity(*_host())}
    if ir is not None:
        h["ir_sha256"] = hashlib.sha256(ir.encode()).hexdigest()
        h["symbols"] = _DEFINE.findall(ir)
    if opt is not None:
        h["opt"] = int(opt)
    return h


def _path(k: str) -> Path:
    if not (isinstance(k, str) and len(k) == 64 and all(c in "0123456789abcdef" for c in k)):
        raise ValueError(f"cache key {k!r} is not a key made by tapead.cache.key")
    return directory() / (k + SUFFIX)


def trusted(d: Path) -> bool:
    """Whether entries in ``d`` may be read or written: it is a directory owned by this user and writable by no
    one else (warns once per directory when it is not). A missing directory is not trusted (nor created here)."""
    try:
        st = os.stat(d)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if os.name != "posix":
        return True
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"it is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if problem is None:
        return True
    if str(d) not in _warned:
        _warned.add(str(d))
        warnings.warn(f"tapead kernel cache disabled for {d}: {problem}. Cached kernels are machine code run in "
                      "this process, so the directory must be private (chmod 700, owned by you); or set "
                      "TAPEAD_CACHE_DIR to a private directory, or TAPEAD_CACHE=0.", RuntimeWarning, stacklevel=3)
    return False


def _read(path: Path) -> bytes | None:
    """The bytes of a regular file of at most MAX_ENTRY bytes owned by this user; None for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_ENTRY or \
                (os.name == "posix" and st.st_uid != os.geteuid()):
            return None
        chunks, left = [], st.st_size + 1  # one byte more: a file that grows while read is refused
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _unpack(blob: bytes, expected: dict) -> bytes | None:
    """The object in an entry whose checksum holds and whose header matches ``expected``; else None."""
    if len(blob) < _PREFIX.size + _DIGEST or hashlib.sha256(blob[:-_DIGEST]).digest() != blob[-_DIGEST:]:
        return None
    magic, fmt, size = _PREFIX.unpack_from(blob)
    if magic != MAGIC or fmt != FORMAT or size > MAX_HEADER or _PREFIX.size + size > len(blob) - _DIGEST:
        return None
    try:
        h = json.loads(blob[_PREFIX.size:_PREFIX.size + size].decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(h, dict) or h != expected:
        return None
    return blob[_PREFIX.size + size:-_DIGEST]


def get(k: str, ir: str | None = None, opt: int | None = None) -> bytes | None:
    """The object file stored under ``k`` (made from ``ir`` at ``opt`` when given), or None: missing, disabled,
    untrusted directory, not a regular file, too large, damaged, or made for another key (then removed)."""
    if not enabled():
        return None
    path = _path(k)
    if not trusted(path.parent):
        return None
    blob = _read(path)
    if blob is None:
        return None
    data = _unpack(blob, header(k, ir, opt))
    if data is None:
        try:
            path.unlink()
        except OSError:
            pass
    return data


def put(k: str, data: bytes, ir: str | None = None, opt: int | None = None) -> None:
    """Store ``data`` under ``k`` atomically (temporary file + rename); does nothing if disabled, unwritable or
    untrusted. A new directory is made private (mode 0o700)."""
    if not enabled():
        return
    path = _path(k)
    text = json.dumps(header(k, ir, opt), sort_keys=True, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER or len(data) + len(text) + _PREFIX.size + _DIGEST > MAX_ENTRY:
        return
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not trusted(path.parent):
            return
        body = _PREFIX.pack(MAGIC, FORMAT, len(text)) + text + bytes(data)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(body + hashlib.sha256(body).digest())
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
            size += p.lstat().st_size
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


def complete(engine, ir: str) -> bool:
    """Whether the engine defines every function the IR defines (a last check before running cached code)."""
    return all(engine.get_function_address(name) for name in _DEFINE.findall(ir))
