"""Native Python entry points: single-point calls that read numpy arrays through the buffer protocol.

Reading an array's pointer from Python (``arr.ctypes.data``) costs more than a small kernel. Instead, an entry
point compiled with llvmlite against the CPython API is wrapped as a builtin function (METH_FASTCALL): it takes
the arrays themselves, checks format "d", C-contiguity, writability (outputs) and the exact shape of every
buffer, that every output is a plain ``numpy.ndarray`` and that no output's bytes overlap another buffer's, calls
the kernel and returns. Anything not exactly right (another dtype, a list, a strided view, an array subclass or
memoryview as an output, aliased outputs, a failed guard) is handed, with the same arguments, to the function's
fallback (its bound Python object): the Python path, which converts, follows branches or raises a precise
InputError; the Tape methods bind a fallback that returns the FALLBACK sentinel and continue in Python. So the
fast path never changes results or errors, only their cost, and accepts exactly what the Python path accepts.
"""
from __future__ import annotations

import ctypes
import sys

import llvmlite.binding as llvm
import numpy as np

from .batchloops import call_site
from .jit import initialize
from ..transforms.kernelspec import FALLBACK, fast_batch_name

_PYBUF_ANY = 0x0004 | 0x0008 | 0x0010 | 0x0020  # FORMAT | ND | STRIDES | C_CONTIGUOUS
_PYBUF_WRITE = _PYBUF_ANY | 0x0001
_API = ("PyObject_GetBuffer", "PyBuffer_Release", "PyErr_Clear", "PyFloat_FromDouble", "PyObject_Vectorcall",
        "Py_DecRef")
_NONE_SYMBOL = "tapead_py_none"  # resolved at load time: None's address differs between processes
_TRUE_SYMBOL = "tapead_py_true"  # (as None's: resolved at load time)
_ONE_SYMBOL = "tapead_py_one"  # the int 1 (CPython keeps one object for it)
_NDARRAY_SYMBOL = "tapead_ndarray_type"  # numpy.ndarray's type object: outputs must be exactly this type
# PyObject's ob_type is the last pointer of the object header (after the reference count, and after the extra
# fields of debug or free-threaded builds): its offset is the header size minus one pointer.
_OB_TYPE = object.__basicsize__ - ctypes.sizeof(ctypes.c_void_p)
_OB_SIZE = object.__basicsize__  # a tuple's length follows the object header, its items follow the length
_TUPLE_ITEMS = tuple.__basicsize__
# a method's keywords, matched by identity with the interned names (every call site's literal keyword is one);
# any other spelling goes to the Python method, which answers the same
_KEYWORDS = ("params", "out", "threads")
_KEYWORD_SYMBOL = "tapead_keyword_"
# operations up to which the native method runs a batch itself, on the calling thread: above that the Python
# path's cost (~15 us) is small beside the work, and it may split the batch over threads (ctypes releases the GIL)
BATCH_OPS = 200_000
LAYOUT = f"{_OB_TYPE} {_OB_SIZE} {_TUPLE_ITEMS} {sys.implementation.cache_tag}"  # the object layout the IR reads
_registered = False


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p), ("ml_flags", ctypes.c_int),
                ("ml_doc", ctypes.c_char_p)]


_new_function = ctypes.pythonapi.PyCFunction_NewEx
_new_function.restype = ctypes.py_object
_new_function.argtypes = [ctypes.POINTER(_MethodDef), ctypes.py_object, ctypes.py_object]
METH_FASTCALL = 0x0080
METH_KEYWORDS = 0x0002


def _register_api() -> None:
    global _registered
    if not _registered:
        initialize()
        for name in _API:
            llvm.add_symbol(name, ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value)
        llvm.add_symbol(_NONE_SYMBOL, id(None))
        llvm.add_symbol(_NDARRAY_SYMBOL, id(np.ndarray))
        llvm.add_symbol(_TRUE_SYMBOL, id(True))
        llvm.add_symbol(_ONE_SYMBOL, id(1))
        for word in _KEYWORDS:
            llvm.add_symbol(_KEYWORD_SYMBOL + word, id(sys.intern(word)))
        _registered = True


def lower_entry(spec, inline: bool = True, records: int = 0) -> str:
    """IR of a kernel's native Python entry points (``kernelspec.KernelSpec`` describes the kernel).

    ``PyObject *NAME_entry(PyObject *fallback, PyObject *const *args, Py_ssize_t nargs)`` takes the kernel's own
    argument order, ``args = (inputs..., params, outs...)``: ``params`` must be None for a tape without params
    and an array for one with them; an out may be None (the kernel skips it). It returns the last out array (new
    reference), or with ``scalar_result`` a float built from the kernel's single output; otherwise it returns
    ``fallback(*args)``, the Python path (which converts, dispatches branches or raises). Where the spec has a
    ``method`` layout, ``NAME_method`` takes the Function method's arguments as well (``lower_method``).
    ``inline`` False calls the kernel rather than inlining it (``batchloops.call_site``: a large kernel);
    ``records`` (the kernel's size) bounds the batches the method runs itself (``BATCH_OPS``).
    """
    batch = _method_batch(spec, records)
    return "\n".join(_declarations() + _lower_run(spec, inline) + (_lower_run(spec, inline, batch) if batch else [])
                     + _lower_positional(spec) + lower_method(spec, batch is not None)) + "\n"


def _method_batch(spec, records: int) -> tuple | None:
    """``(outs present, most points)`` of the batches the native method runs itself (an ``out`` given), or None:
    a kernel small enough for a few points. A scalar tape's value takes its batch's ``out`` (N,) as the one out
    its point call does not have."""
    if spec.method is None or not records or BATCH_OPS // records < 2:
        return None
    if spec.method[0] is None:
        return (True,), BATCH_OPS // records
    slot = spec.method[0] - len(spec.in_shapes) - 1
    return tuple(i == slot for i in range(len(spec.out_shapes))), BATCH_OPS // records


def _declarations() -> list[str]:
    return ["%buf = type { ptr, ptr, i64, i64, i32, i32, ptr, ptr, ptr, ptr, ptr }",
            "declare i32 @PyObject_GetBuffer(ptr, ptr, i32)", "declare void @PyBuffer_Release(ptr)",
            "declare void @PyErr_Clear()", "declare ptr @PyFloat_FromDouble(double)",
            "declare ptr @PyObject_Vectorcall(ptr, ptr, i64, ptr)", "declare void @Py_DecRef(ptr)",
            f"@{_NONE_SYMBOL} = external global i8", f"@{_NDARRAY_SYMBOL} = external global i8",
            f"@{_TRUE_SYMBOL} = external global i8", f"@{_ONE_SYMBOL} = external global i8"] + \
        [f"@{_KEYWORD_SYMBOL}{word} = external global i8" for word in _KEYWORDS]


def _lower_positional(spec) -> list[str]:
    """``NAME_entry``: the kernel's argument order, checked by ``NAME_run``, else the fallback."""
    name, k = spec.name, len(spec.in_shapes) + 1 + len(spec.out_shapes)
    return [f"define ptr @{name}_entry(ptr %self, ptr %args, i64 %nargs) {{", "entry:",
            f"  %nok = icmp eq i64 %nargs, {k}", "  br i1 %nok, label %run, label %fallback", "run:",
            f"  %r = call ptr @{name}_run(ptr %args)", "  %ok = icmp ne ptr %r, null",
            "  br i1 %ok, label %done, label %fallback", "done:", "  ret ptr %r", "fallback:",
            "  %fb = call ptr @PyObject_Vectorcall(ptr %self, ptr %args, i64 %nargs, ptr null)", "  ret ptr %fb",
            "}"]


def _lower_run(spec, inline: bool, batch: tuple | None = None) -> list[str]:
    """``ptr NAME_run(PyObject *const *args)``: the kernel's result for exactly right arguments (all ``k`` of
    them, in the kernel's order), else NULL with no Python error set.

    With ``batch`` (``(outs present, at most this many points)``), ``ptr NAME_run_batch(args)`` instead: inputs and
    outs with one more leading axis of the same N (1 <= N <= the bound), params shared or absent, exactly the outs
    ``batch`` names present; the batch loop runs on the calling thread (without the GIL's release, so only small
    batches: the bound keeps them to about 200,000 operations)."""
    name, kernel_name = spec.name + ("_run_batch" if batch else "_run"), spec.name
    in_shapes, params_shape, out_shapes, scalar_result = spec.in_shapes, spec.param_shape, spec.out_shapes, \
        spec.scalar_result
    if batch and scalar_result:  # a batch of a scalar tape's values: an out of N values
        out_shapes, scalar_result = ((),), False
    specs = [(s, "in") for s in in_shapes] + [(params_shape, "params")] + [(s, "out") for s in out_shapes]
    k = len(specs)
    L = []
    # release every acquired buffer (flags in %acq)
    L += [f"define internal void @{name}_release(ptr %bufs, ptr %acq) {{", "r0:"]
    for j in range(k):
        L += [f"  %fp{j} = getelementptr i8, ptr %acq, i64 {j}", f"  %f{j} = load i8, ptr %fp{j}",
              f"  %t{j} = icmp ne i8 %f{j}, 0", f"  br i1 %t{j}, label %do{j}, label %r{j + 1}", f"do{j}:",
              f"  %b{j} = getelementptr [{k} x %buf], ptr %bufs, i64 0, i64 {j}",
              f"  call void @PyBuffer_Release(ptr %b{j})", f"  br label %r{j + 1}", f"r{j + 1}:"]
    L += ["  ret void", "}"]
    L += [f"define internal ptr @{name}(ptr %args) {{", "entry:",
          f"  %bufs = alloca [{k} x %buf]", f"  %acq = alloca [{k} x i8]", f"  %ptrs = alloca [{k} x ptr]",
          f"  %lens = alloca [{k} x i64]", "  %result = alloca double", "  %nb = alloca i64"]
    for j in range(k):
        L += [f"  %acq{j} = getelementptr i8, ptr %acq, i64 {j}", f"  store i8 0, ptr %acq{j}",
              f"  %pt{j} = getelementptr ptr, ptr %ptrs, i64 {j}", f"  store ptr null, ptr %pt{j}",
              f"  %ln{j} = getelementptr i64, ptr %lens, i64 {j}", f"  store i64 0, ptr %ln{j}"]
    L += ["  br label %a0"]
    outs = [j for j, (_, kind) in enumerate(specs) if kind == "out"]
    for j, (shape, kind) in enumerate(specs):
        L += [f"a{j}:", f"  %ap{j} = getelementptr ptr, ptr %args, i64 {j}", f"  %o{j} = load ptr, ptr %ap{j}",
              f"  %none{j} = icmp eq ptr %o{j}, @{_NONE_SYMBOL}"]
        lead = 1 if batch and kind != "params" else 0
        if shape is None or (batch and kind == "out" and not batch[0][outs.index(j)]):  # only None accepted
            L += [f"  br i1 %none{j}, label %a{j + 1}, label %fail"]
            continue
        absent = f"%a{j + 1}" if kind == "out" and not batch else "%fail"
        flags = _PYBUF_WRITE if kind == "out" else _PYBUF_ANY
        if kind == "out":  # exactly numpy.ndarray (no subclass, no memoryview), as the Python path requires
            L += [f"  br i1 %none{j}, label {absent}, label %t{j}", f"t{j}:",
                  f"  %tp{j} = getelementptr i8, ptr %o{j}, i64 {_OB_TYPE}", f"  %ty{j} = load ptr, ptr %tp{j}",
                  f"  %isnd{j} = icmp eq ptr %ty{j}, @{_NDARRAY_SYMBOL}",
                  f"  br i1 %isnd{j}, label %g{j}, label %fail"]
        else:
            L += [f"  br i1 %none{j}, label {absent}, label %g{j}"]
        L += [f"g{j}:",
              f"  %b{j} = getelementptr [{k} x %buf], ptr %bufs, i64 0, i64 {j}",
              f"  %r{j} = call i32 @PyObject_GetBuffer(ptr %o{j}, ptr %b{j}, i32 {flags})",
              f"  %bad{j} = icmp ne i32 %r{j}, 0", f"  br i1 %bad{j}, label %fail, label %c{j}", f"c{j}:",
              f"  store i8 1, ptr %acq{j}",
              f"  %fmp{j} = getelementptr %buf, ptr %b{j}, i32 0, i32 6", f"  %fm{j} = load ptr, ptr %fmp{j}",
              f"  %fc{j} = load i16, ptr %fm{j}", f"  %ok{j} = icmp eq i16 %fc{j}, 100",  # "d\0"
              f"  %ndp{j} = getelementptr %buf, ptr %b{j}, i32 0, i32 5", f"  %nd{j} = load i32, ptr %ndp{j}",
              f"  %oknd{j} = icmp eq i32 %nd{j}, {len(shape) + lead}", f"  %okb{j} = and i1 %ok{j}, %oknd{j}",
              f"  br i1 %okb{j}, label %d{j}, label %fail", f"d{j}:",
              f"  %shp{j} = getelementptr %buf, ptr %b{j}, i32 0, i32 7", f"  %sh{j} = load ptr, ptr %shp{j}"]
        ok = "true"
        if lead:  # the batch axis: input 0 sets N (1 <= N <= the bound), every other array has the same N
            L += [f"  %n{j} = load i64, ptr %sh{j}"]
            if j == 0:
                L += [f"  store i64 %n0, ptr %nb", "  %nlo = icmp sge i64 %n0, 1",
                      f"  %nhi = icmp sle i64 %n0, {batch[1]}", "  %nin = and i1 %nlo, %nhi"]
                ok = "%nin"
            else:
                L += [f"  %nv{j} = load i64, ptr %nb", f"  %ne{j} = icmp eq i64 %n{j}, %nv{j}"]
                ok = f"%ne{j}"
        for d, size in enumerate(shape, start=lead):
            L += [f"  %dp{j}.{d} = getelementptr i64, ptr %sh{j}, i64 {d}",
                  f"  %dv{j}.{d} = load i64, ptr %dp{j}.{d}", f"  %de{j}.{d} = icmp eq i64 %dv{j}.{d}, {size}",
                  f"  %dk{j}.{d} = and i1 {ok}, %de{j}.{d}"]
            ok = f"%dk{j}.{d}"
        L += [f"  br i1 {ok}, label %s{j}, label %fail", f"s{j}:",
              f"  %pp{j} = getelementptr %buf, ptr %b{j}, i32 0, i32 0", f"  %p{j} = load ptr, ptr %pp{j}",
              f"  store ptr %p{j}, ptr %pt{j}",
              f"  %blp{j} = getelementptr %buf, ptr %b{j}, i32 0, i32 2", f"  %bl{j} = load i64, ptr %blp{j}",
              f"  store i64 %bl{j}, ptr %ln{j}", f"  br label %a{j + 1}"]
    L += [f"a{k}:"]
    L += _overlap_check(specs, k)
    n_kernel = len(in_shapes) + 1
    args = []
    for j in range(k):
        L += [f"  %kp{j} = load ptr, ptr %pt{j}"]
        args.append(f"ptr %kp{j}")
    if scalar_result:
        args = args[:n_kernel] + ["ptr %result"]
    if batch:  # ``@name_batch_<mask>`` where the spec has that loop, else the general one
        present, _ = batch
        L += ["  %n = load i64, ptr %nb"]
        head = ["i64 %n"] + args[:n_kernel - 1] + [args[n_kernel - 1], "i64 0"]
        if tuple(present) in spec.fast_masks:
            callee = fast_batch_name(kernel_name, present)
            args = head + [a for a, m in zip(args[n_kernel:], present) if m]
        else:
            callee, args = kernel_name + "_batch", head + args[n_kernel:] + ["ptr null"]
        L += [f"  %st = call i32 @{callee}({', '.join(args)})",
              f"  call void @{name}_release(ptr %bufs, ptr %acq)"]
    else:
        L += [f"  %st = call i32 @{kernel_name}({', '.join(args)}){call_site(inline)}",
              f"  call void @{name}_release(ptr %bufs, ptr %acq)"]
    L += ["  %stbad = icmp ne i32 %st, 0", "  br i1 %stbad, label %refused, label %success", "success:"]
    if scalar_result:
        L += ["  %v = load double, ptr %result", "  %fl = call ptr @PyFloat_FromDouble(double %v)",
              "  %flnull = icmp eq ptr %fl, null", "  br i1 %flnull, label %nofloat, label %float", "nofloat:",
              "  call void @PyErr_Clear()", "  ret ptr null", "float:", "  ret ptr %fl"]
    else:
        L += [f"  %rc = load i64, ptr %o{k - 1}", "  %rc1 = add i64 %rc, 1", f"  store i64 %rc1, ptr %o{k - 1}",
              f"  ret ptr %o{k - 1}"]
    # anything not exactly right: NULL, and the caller hands the call to the Python path
    L += ["fail:", f"  call void @{name}_release(ptr %bufs, ptr %acq)", "  call void @PyErr_Clear()",
          "  ret ptr null", "refused:", "  ret ptr null", "}"]
    return L


def lower_method(spec, batches: bool = False) -> list[str]:
    """``PyObject *NAME_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)``
    (METH_FASTCALL | METH_KEYWORDS): the Function method's own call, ``value(x, ..., params=None[, out=None])``
    or ``gradient(x, params=None, out=None)``, answered without Python when every argument is exactly right.

    ``self`` is ``(fallback, allocate, batches, takes threads)``. Inputs are positional; the keywords ``params``
    and ``out`` (where the layout has an out) fill their slots, a missing or None ``out`` is ``allocate()``d,
    and ``threads`` may be None or 1 where the Python method takes it. Any other call (another keyword or value,
    another count, arguments ``NAME_run`` refuses) is ``fallback(*args, **kwargs)`` with the call's own
    arguments: the Python method, so results and errors are the same either way. With ``batches`` (and
    ``self``'s ``batches`` True), arguments with one more leading axis go to ``NAME_run_batch`` (small batches,
    an ``out`` given).
    """
    if spec.method is None:
        return []
    out_slot, allocate = spec.method
    name, n = spec.name, len(spec.in_shapes)
    k = n + 1 + len(spec.out_shapes)
    outs_kw = out_slot is not None or batches  # (a scalar value's out= is a batch's)
    L = [f"define ptr @{name}_method(ptr %self, ptr %args, i64 %nargs, ptr %kw) {{", "entry:",
         f"  %argv = alloca [{k + 1} x ptr]", "  %outv = alloca ptr", "  store ptr null, ptr %outv",
         f"  %fbp = getelementptr i8, ptr %self, i64 {_TUPLE_ITEMS}", "  %fb = load ptr, ptr %fbp",
         # the count first: a call without arguments may pass no array at all (args NULL)
         f"  %nok = icmp eq i64 %nargs, {n}", "  br i1 %nok, label %kws, label %fallback", "kws:"]
    for j in range(k + 1):  # (slot k: a scalar value's batch out)
        L += [f"  %av{j} = getelementptr ptr, ptr %argv, i64 {j}"]
        if j < n:
            L += [f"  %ap{j} = getelementptr ptr, ptr %args, i64 {j}", f"  %x{j} = load ptr, ptr %ap{j}",
                  f"  store ptr %x{j}, ptr %av{j}"]
        else:
            L += [f"  store ptr @{_NONE_SYMBOL}, ptr %av{j}"]
    L += ["  %haskw = icmp ne ptr %kw, null", "  br i1 %haskw, label %kwn, label %kwdone", "kwn:",
          f"  %nkwp = getelementptr i8, ptr %kw, i64 {_OB_SIZE}", "  %nkw = load i64, ptr %nkwp", "  br label %kwc0"]
    for i in range(len(_KEYWORDS)):  # each keyword at most once (Python refuses repeats before the call)
        L += [f"kwc{i}:", f"  %more{i} = icmp ugt i64 %nkw, {i}", f"  br i1 %more{i}, label %kw{i}, label %kwdone",
              f"kw{i}:", f"  %knp{i} = getelementptr i8, ptr %kw, i64 {_TUPLE_ITEMS + 8 * i}",
              f"  %kn{i} = load ptr, ptr %knp{i}", f"  %kvp{i} = getelementptr ptr, ptr %args, i64 {n + i}",
              f"  %kv{i} = load ptr, ptr %kvp{i}", f"  %isp{i} = icmp eq ptr %kn{i}, @{_KEYWORD_SYMBOL}params",
              f"  br i1 %isp{i}, label %kp{i}, label %kt{i}", f"kp{i}:", f"  store ptr %kv{i}, ptr %av{n}",
              f"  br label %kwc{i + 1}", f"kt{i}:",
              # threads=None or threads=1 (one thread is what this entry runs); any other value: Python decides
              f"  %ist{i} = icmp eq ptr %kn{i}, @{_KEYWORD_SYMBOL}threads",
              f"  br i1 %ist{i}, label %ktv{i}, label %ko{i}", f"ktv{i}:",
              f"  %tn{i} = icmp eq ptr %kv{i}, @{_NONE_SYMBOL}", f"  %t1{i} = icmp eq ptr %kv{i}, @{_ONE_SYMBOL}",
              *_self_is_true(3, f"tm{i}"), f"  %tv{i} = or i1 %tn{i}, %t1{i}", f"  %tok{i} = and i1 %tv{i}, %tm{i}",
              f"  br i1 %tok{i}, label %kwc{i + 1}, label %fallback", f"ko{i}:"]
        if not outs_kw:
            L += ["  br label %fallback"]
        else:
            L += [f"  %iso{i} = icmp eq ptr %kn{i}, @{_KEYWORD_SYMBOL}out",
                  f"  br i1 %iso{i}, label %kout{i}, label %fallback", f"kout{i}:", f"  store ptr %kv{i}, ptr %outv",
                  f"  br label %kwc{i + 1}"]
    L += [f"kwc{len(_KEYWORDS)}:", f"  %toomany = icmp ugt i64 %nkw, {len(_KEYWORDS)}",
          "  br i1 %toomany, label %fallback, label %kwdone", "kwdone:"]
    if out_slot is None and batches:  # a scalar value: out= given means a batch, else one point
        L += ["  %o = load ptr, ptr %outv", "  %onull = icmp eq ptr %o, null",
              f"  %onone = icmp eq ptr %o, @{_NONE_SYMBOL}", "  %absent = or i1 %onull, %onone",
              "  br i1 %absent, label %run, label %valuesb", "valuesb:", f"  store ptr %o, ptr %av{k}",
              *_self_is_true(2, "vbon"), "  br i1 %vbon, label %vb, label %fallback", "vb:",
              f"  %rv = call ptr @{name}_run_batch(ptr %argv)", "  %rvok = icmp ne ptr %rv, null",
              "  br i1 %rvok, label %vdone, label %fallback", "vdone:", "  ret ptr %rv", "run:"]
    elif out_slot is None:
        L += ["  br label %run", "run:"]
    else:
        L += ["  %o = load ptr, ptr %outv", "  %onull = icmp eq ptr %o, null",
              f"  %onone = icmp eq ptr %o, @{_NONE_SYMBOL}", "  %absent = or i1 %onull, %onone",
              f"  br i1 %absent, label %{'alloc' if allocate else 'fallback'}, label %given", "given:",
              f"  store ptr %o, ptr %av{out_slot}", "  br label %run"]
        if allocate:
            L += ["alloc:", f"  %alp = getelementptr i8, ptr %self, i64 {_TUPLE_ITEMS + 8}",
                  "  %al = load ptr, ptr %alp",
                  "  %new = call ptr @PyObject_Vectorcall(ptr %al, ptr null, i64 0, ptr null)",
                  "  %newnull = icmp eq ptr %new, null", "  br i1 %newnull, label %allocfail, label %allocok",
                  "allocfail:", "  call void @PyErr_Clear()", "  br label %fallback", "allocok:",
                  f"  store ptr %new, ptr %av{out_slot}", "  br label %run"]
        L += ["run:", "  %own = phi ptr " + ", ".join(["[null, %given]"] + (["[%new, %allocok]"] if allocate else []))]
    L += [f"  %r1 = call ptr @{name}_run(ptr %argv)"]
    if batches and out_slot is not None:  # not one point: a batch? (an allocated out has a point's shape: the
        # Python path answers), unless self's ``batches`` is not True: batches with points on other paths
        L += ["  %r1null = icmp eq ptr %r1, null", *_self_is_true(2, "bon"), "  %try = and i1 %r1null, %bon",
              "  br i1 %try, label %tryb, label %gotr", "tryb:",
              f"  %rb = call ptr @{name}_run_batch(ptr %argv)", "  br label %gotr", "gotr:",
              "  %r = phi ptr [%r1, %run], [%rb, %tryb]"]
    else:
        L += ["  %r = getelementptr i8, ptr %r1, i64 0"]
    if out_slot is not None:  # drop the array allocated here (NULL: nothing); a result holds its own reference
        L += ["  call void @Py_DecRef(ptr %own)"]
    L += ["  %ok = icmp ne ptr %r, null", "  br i1 %ok, label %done, label %fallback", "done:", "  ret ptr %r",
          "fallback:", "  %res = call ptr @PyObject_Vectorcall(ptr %fb, ptr %args, i64 %nargs, ptr %kw)",
          "  ret ptr %res", "}"]
    return L


def _self_is_true(item: int, tag: str) -> list[str]:
    """IR setting ``%tag`` to whether item ``item`` of the method's ``self`` tuple is True."""
    return [f"  %{tag}.p = getelementptr i8, ptr %self, i64 {_TUPLE_ITEMS + 8 * item}",
            f"  %{tag}.v = load ptr, ptr %{tag}.p", f"  %{tag} = icmp eq ptr %{tag}.v, @{_TRUE_SYMBOL}"]


def _overlap_check(specs: list, k: int) -> list[str]:
    """IR refusing (branch to %fail) any output whose byte range meets another output's or an input's.

    Ranges ``[p, p + len)`` of two non-empty buffers overlap iff each starts before the other ends: a few integer
    compares per pair, no call. Absent buffers (None outputs) have length 0 and never overlap.
    """
    outs = [j for j, (shape, kind) in enumerate(specs) if kind == "out"]
    pairs = [(j, i) for j in outs for i in range(k) if i != j and (specs[i][1] != "out" or i > j)
             and specs[i][0] is not None]
    L = []
    for j in range(k):
        if specs[j][0] is not None:
            L += [f"  %va{j} = load ptr, ptr %pt{j}", f"  %vi{j} = ptrtoint ptr %va{j} to i64",
                  f"  %vl{j} = load i64, ptr %ln{j}", f"  %ve{j} = add i64 %vi{j}, %vl{j}",
                  f"  %vn{j} = icmp ne i64 %vl{j}, 0"]
    hit = "false"
    for n, (j, i) in enumerate(pairs):
        L += [f"  %ov{n}.a = icmp ult i64 %vi{j}, %ve{i}", f"  %ov{n}.b = icmp ult i64 %vi{i}, %ve{j}",
              f"  %ov{n}.c = and i1 %ov{n}.a, %ov{n}.b", f"  %ov{n}.d = and i1 %vn{j}, %vn{i}",
              f"  %ov{n}.e = and i1 %ov{n}.c, %ov{n}.d", f"  %ov{n} = or i1 {hit}, %ov{n}.e"]
        hit = f"%ov{n}"
    return L + [f"  br i1 {hit}, label %fail, label %call", "call:"]


def builtin(address: int, name: str, fallback=None, keywords: bool = False, doc: str | None = None):
    """Wrap a compiled entry point as a Python builtin function; returns ``(function, keep_alive)``.

    ``fallback`` (default: a function returning FALLBACK) is the function's ``self``: for ``NAME_entry`` what
    answers every call the native path cannot, for ``NAME_method`` (``keywords``) the pair ``(fallback,
    allocate)``. ``keep_alive`` (the method record) must live as long as the function.
    """
    _register_api()
    flags = METH_FASTCALL | (METH_KEYWORDS if keywords else 0)
    method = _MethodDef(name.encode(), address, flags, doc.encode() if doc else None)
    return _new_function(ctypes.byref(method), fallback or _sentinel, None), method


def _sentinel(*args):
    return FALLBACK


def prepare() -> None:
    """Make the CPython API symbols visible to the JIT (before compiling a module with an entry point)."""
    _register_api()
