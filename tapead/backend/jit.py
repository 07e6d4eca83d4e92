"""Native compilation: LLVM IR text -> verified, optimised machine code in an MCJIT engine, wrapped as a Kernel.

One target machine per engine (host CPU and features; MCJIT owns it), a fresh pass builder and pass manager per
module, deleted right after its run (see ``_free_pass_manager``), and the engine kept alive exactly as long as its
Kernel. JIT code uses the large code model: MCJIT may place a module's sections (and
libm) more than 2 GB apart in a fragmented address space, where the small model's 32-bit relocations would
abort the process; with plain libm declarations (not intrinsics) the large model compiles as fast.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time

import llvmlite.binding as llvm
from llvmlite.binding import ffi

from . import cache
from .chunking import optimise_around_pieces
from ..errors import CompileError

_lock = threading.Lock()
_ready = False


def _llvm_lock():
    """llvmlite's own lock around every LLVM C call (a reentrant lock), or None if this llvmlite has none."""
    return getattr(getattr(getattr(ffi, "lib", None), "_lock", None), "_lock", None)


def _before_fork() -> None:
    """Fork only between LLVM calls: a background build holding llvmlite's lock (or LLVM's own state half
    updated) at the moment of a fork would leave the child's first compilation waiting forever on a lock whose
    owner does not exist there. Taken in the order compilations take them (this module's, then llvmlite's)."""
    _lock.acquire()
    lock = _llvm_lock()
    if lock is not None:
        lock.acquire()


def _after_fork() -> None:
    lock = _llvm_lock()
    if lock is not None:
        lock.release()
    _lock.release()


def _after_fork_in_child() -> None:
    """The child has none of the parent's build threads: it may run as many compiling processes as it likes."""
    global _builders
    _after_fork()
    _builders = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child)
def initialize() -> None:
    """Set LLVM up once per process (the native target, its asm printer, and libm for the kernels)."""
    global _ready
    with _lock:
        if not _ready:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            # LLVM's post-RA list scheduler is quadratic in a basic block's length: emitting the O2 object of a
            # 2,000-step cumsum chain's gradient spent 3.3 of 5.5 s in it. Out-of-order x86 cores reorder the
            # code themselves: kernels replay within noise without it (lj, rosenbrock, seed_foo; point and batch)
            llvm.set_option("tapead", "-post-RA-scheduler=false")
            libm = ctypes.util.find_library("m")
            if libm:
                llvm.load_library_permanently(libm)
            _ready = True


def target_machine(opt: int = 2, *, jit: bool = True, cpu: str | None = None):
    """A target machine for the host CPU (or ``cpu``, e.g. 'x86-64'), for the JIT or for object files."""
    initialize()
    target = llvm.Target.from_default_triple()
    if cpu is None:
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    else:
        features = ""
    return target.create_target_machine(cpu=cpu, features=features, opt=opt,
                                        reloc="default" if jit else "pic",
                                        codemodel="large" if jit else "default", jit=jit)


def optimise(ir: str, tm, opt: int):
    """Parse, verify and optimise IR text; returns the llvmlite module. The straight-line pieces of a cut kernel
    are compiled as written (``chunking.optimise_around_pieces``)."""
    initialize()
    if opt > 0:
        around = optimise_around_pieces(ir, lambda text: str(_run_pipeline(_parse(text, tm), tm, opt)))
        if around is not None:
            return _parse(around, tm)
    module = _parse(ir, tm)
    return _run_pipeline(module, tm, opt) if opt > 0 else module


def _parse(ir: str, tm):
    try:
        module = llvm.parse_assembly(ir)
        module.verify()
    except RuntimeError as e:
        raise CompileError(f"generated LLVM IR is invalid: {e}") from None
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    return module


def _run_pipeline(module, tm, opt: int):
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    try:
        mpm.run(module, pb)
    finally:
        _free_pass_manager(mpm)
    return module


def _free_pass_manager(mpm) -> None:
    """Delete a pass manager (with its passes and the state they grew while running) now.

    llvmlite's ``ModulePassManager`` lists ``ObjectRef`` before the base class that defines the real
    ``_dispose``, so its own clean-up is ObjectRef's no-op and every pipeline was kept for ever: 30 KB to build
    the O2 pipeline plus about 55 KB of pass state per run (measured, llvmlite 0.50). Where a later llvmlite
    disposes it itself, this leaves it alone.
    """
    if type(mpm)._dispose is ffi.ObjectRef._dispose and not mpm.closed:
        ffi.lib.LLVMPY_DisposeNewModulePassManger(mpm)
        mpm.detach()


class Source:
    """IR text to compile, made only when it is needed. ``key_text`` stands for the text in the kernel cache: it
    names everything the text is made from (and, as ``define ... @name(`` lines, the functions it defines), so a
    cache hit loads the machine code without generating the IR at all. Plain IR text is its own key."""

    def __init__(self, make, key_text: str | None = None):
        self._make, self._text, self.key_text = make, None, key_text

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self._make()
            if self.key_text is None:
                self.key_text = self._text
        return self._text

    @staticmethod
    def of(ir) -> "Source":
        return ir if isinstance(ir, Source) else Source(lambda: ir, ir)


def build_engine(ir, opt: int, elsewhere: bool = False):
    """An MCJIT engine holding the compiled module (keep it alive as long as its code is used).

    Goes through the on-disk kernel cache: a hit loads the object file and skips LLVM entirely. With
    ``elsewhere`` the object file is made by a separate Python process: llvmlite serialises LLVM calls within a
    process, so a long optimising compile there would hold up every other compilation here.
    """
    src = Source.of(ir)
    tm = target_machine(opt)
    if elsewhere:
        k = cache.key(src.key_text, opt) if cache.enabled() else None
        data = cache.get(k, src.key_text, opt) if k else None
        hit = data is not None
        if not hit:
            data = _object_from_subprocess(src.text, opt)
        if data is not None:
            engine = cache.engine_from_object(data, tm)
            if cache.complete(engine, src.key_text):
                if k and not hit:
                    cache.put(k, data, src.key_text, opt)
                return engine
            del engine  # it owned the target machine
            tm = target_machine(opt)
    engine, _ = cached_engine(src, tm, opt)
    return engine


def compile_object(ir: str, opt: int) -> bytes:
    """The object file (host CPU, JIT code model) for IR text; what a compiling subprocess runs."""
    tm = target_machine(opt)
    return tm.emit_object(optimise(ir, tm, opt))


class Abandoned(Exception):
    """A background build given up because the interpreter is exiting."""


_stopping = threading.Event()
_builders = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))  # compiling subprocesses at a time


def stop_background_builds() -> None:
    """Called when the main thread returns: pending background builds are abandoned (their subprocesses
    killed), so exit waits at most for an LLVM call in flight, never for a queue of optimising compiles."""
    _stopping.set()


def stopping() -> bool:
    return _stopping.is_set()


def _object_from_subprocess(ir: str, opt: int) -> bytes | None:
    """Compile in a fresh Python process; None if that is not possible here (the caller compiles in-process).
    At most one such process per core; raises Abandoned once the interpreter is exiting."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds tapead/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    script = ("import sys; from tapead.backend.jit import compile_object; "
              f"sys.stdout.buffer.write(compile_object(sys.stdin.read(), {int(opt)}))")
    while not _builders.acquire(timeout=0.1):
        if _stopping.is_set():
            raise Abandoned
    try:
        if _stopping.is_set():
            raise Abandoned
        try:
            proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
        except OSError:
            return None
        result: list = []
        talk = threading.Thread(target=lambda: result.append(proc.communicate(ir.encode())[0]), daemon=True)
        talk.start()  # writes the IR and drains the object file (a pipe holds 64 KB: both ends must move)
        started = time.monotonic()
        while talk.is_alive():
            if _stopping.is_set() or time.monotonic() - started > 600:
                proc.kill()
                talk.join()
                raise Abandoned
            talk.join(0.05)
        return (result[0] if result and proc.returncode == 0 else b"") or None
    finally:
        _builders.release()


class Kernel:
    """A compiled point kernel and batch kernel for one tape and one argument/output grouping."""

    def __init__(self, ir, name: str, n_in_groups: int, n_out_groups: int, opt: int,
                 extra_symbols: tuple[str, ...] = (), fast_masks=(), elsewhere: bool = False):
        started = time.perf_counter()
        self.opt = opt
        self.engine = build_engine(ir, opt, elsewhere)
        ptr = ctypes.c_void_p
        point_type = ctypes.CFUNCTYPE(ctypes.c_int32, *([ptr] * (n_in_groups + 1 + n_out_groups)))
        batch_type = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, *([ptr] * (n_in_groups + 1)),
                                      ctypes.c_int64, *([ptr] * n_out_groups), ptr)
        self.point_address = self.engine.get_function_address(name)
        self.batch_address = self.engine.get_function_address(name + "_batch")
        self.point = point_type(self.point_address)
        self.batch = batch_type(self.batch_address)
        self.addresses = {s: self.engine.get_function_address(s) for s in extra_symbols}
        self.fast = {}  # output mask -> batch loop writing exactly those outputs (see batchloops.fast_batch)
        for mask in fast_masks:
            fast_type = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int64, *([ptr] * (n_in_groups + 1)),
                                         ctypes.c_int64, *([ptr] * sum(mask)))
            self.fast[tuple(mask)] = fast_type(
                self.engine.get_function_address(f"{name}_batch_" + "".join("1" if m else "0" for m in mask)))
        # a kernel whose work array is too big for the stack keeps a pool of them (tapead.chunking): freed by
        # running ``_release`` in the engine's code, so the engine must outlive this kernel's finalizer even when
        # both become garbage together (the collector finalizes a cycle's objects in no particular order): a
        # module-level reference keeps it until then
        self._release = self.engine.get_function_address(name + "_release") or None
        if self._release:
            _POOL_ENGINES[id(self)] = self.engine
        self.compile_seconds = time.perf_counter() - started
        # what the runtime attaches once the kernel is built, declared here so every Kernel has them:
        self.entry = None  # the native single-point entry (a Python callable), when the spec has one
        self.entry_keep = None  # what keeps that callable's wrapper alive
        self.n_ops = 0  # instructions the kernel runs per point (the thread policy reads it)
        self.point_seconds: float | None = None  # measured seconds per point of one-thread batches (the policy)

    def __del__(self):
        release = getattr(self, "_release", None)
        if release:
            try:
                engine = _POOL_ENGINES.pop(id(self), None)
            except (AttributeError, TypeError):  # interpreter teardown: leave the buffers to the exit
                return
            if engine is not None and engine is getattr(self, "engine", None):
                ctypes.CFUNCTYPE(None)(release)()


_POOL_ENGINES: dict = {}  # id(kernel) -> its engine, for kernels that free a pool of work arrays when dropped


def compile_kernel(ir, spec, elsewhere: bool = False) -> Kernel:
    """Compile the IR of a ``kernelspec.KernelSpec`` at its level into a Kernel with its point, batch, fast-batch
    and entry functions bound."""
    return Kernel(ir, spec.name, len(spec.in_groups), len(spec.out_groups), spec.opt, tuple(spec.entries),
                  spec.fast_masks, elsewhere)


def cached_engine(ir, tm, opt: int) -> tuple[object, bool]:
    """``(engine, hit)`` for IR (text or a ``jit.Source``): from the cache when possible, else optimised, emitted
    once, stored and loaded.

    Machine code is generated once either way (the object is emitted and loaded into the engine), so a miss
    costs about what a plain JIT compile costs, and a hit skips LLVM's optimisation and code generation (and,
    for a Source, generating the IR text).
    ``tm`` belongs to the engine afterwards (MCJIT owns its target machine).
    """
    src = Source.of(ir)
    k = cache.key(src.key_text, opt) if cache.enabled() else None
    data = cache.get(k, src.key_text, opt) if k else None
    if data is not None:
        engine = cache.engine_from_object(data, tm)
        if cache.complete(engine, src.key_text):
            return engine, True
        del engine  # held its target machine: the rebuild below needs a new one
        tm = target_machine(opt)
    data = tm.emit_object(optimise(src.text, tm, opt))
    if k:
        cache.put(k, data, src.key_text, opt)
    return cache.engine_from_object(data, tm), False
