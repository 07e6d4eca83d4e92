"""Tape files: exact round trips, pickling, and a corruption fuzz where every file loads cleanly or is refused."""
import copyreg
import hashlib
import json
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import tapead
from tapead.ir import store
from tapead.errors import BranchError, TapeFormatError
from tapead.ir.tape import Tape


def two_args(x, y, p):
    return np.sum(np.sin(x) * y ** 2) * p[0] + p[1] * np.exp(x[0] * y[1]) + np.tanh(x[2] / (1 + y[0] ** 2))


def branchy(x):
    if x[0] > 0:
        return x[0] * np.log1p(x[1] ** 2)
    return x[1] * x[1]


def tapes():
    return {
        "params_two_args": tapead.record(two_args, np.ones(3), np.ones(3), params=np.ones(2)),
        "guarded": tapead.record(branchy, np.array([1.0, 2.0]), on_branch="raise"),
        "matrix_output": tapead.record(lambda a: np.dot(a, a.T) / np.hypot(a[0, 0], a[1, 1]), np.ones((2, 3))),
        "scalar_arg": tapead.record(lambda s: np.arctan2(s, 2.0) * np.cosh(s), np.float64(0.5)),
        "no_ops": tapead.record(lambda x: x, np.ones(2)),
        "by_hand": tapead.Function(Tape(code=[[tapead.OPS["mul"].code, 0, 1, -1], [tapead.OPS["lt"].code, 0, 2, -1],
                              [tapead.OPS["select"].code, 6, 3, 1]],
                        consts=[0.0, np.inf, -0.0], input_shapes=[(2,)], param_shape=None,
                        outputs=[7, 5, 4], output_shape=(3,), guards=[[6, 0]]).check()),
    }


def _args(tape, rng, n=None):
    lead = () if n is None else (n,)
    xs = [rng.uniform(0.1, 2.0, size=lead + s) for s in tape.input_shapes]
    p = None if tape.param_shape is None else rng.normal(size=tape.param_shape)
    return xs, p


def _bits(a):
    return np.asarray(a, dtype=np.float64).ravel().view(np.uint64).tolist()


def _same_tape(a, b):
    assert a.hash == b.hash and str(a) == str(b) and b.fn is None
    for f in ("code", "consts", "outputs", "guards"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
    assert (a.input_shapes, a.param_shape, a.output_shape) == (b.input_shapes, b.param_shape, b.output_shape)


@pytest.mark.parametrize("name", list(tapes()))
def test_round_trip_bitwise(name, tmp_path):
    t = tapes()[name]
    data = store.to_bytes(t)
    assert store.to_bytes(t) == data and data.startswith(b"TAPEAD\0")
    loaded = tapead.load(store.save(t, tmp_path / f"{name}.tape"))
    _same_tape(t, loaded)
    assert store.to_bytes(loaded) == data
    rng = np.random.default_rng(0)
    xs, p = _args(t, rng, n=9)
    assert _bits(t.value(*xs, params=p)) == _bits(loaded.value(*xs, params=p))
    assert _bits(t.evaluate(*xs, params=p)) == _bits(loaded.evaluate(*xs, params=p))
    if t.n_outputs == 1:
        for a, b in zip(t.value_and_gradient(*xs, params=p), loaded.value_and_gradient(*xs, params=p)):
            a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
            assert all(_bits(u) == _bits(v) for u, v in zip(a, b))


def test_guards_survive():
    t = tapes()["guarded"]
    loaded = tapead.Function(store.from_bytes(store.to_bytes(t)))
    assert loaded.guards.tolist() == t.guards.tolist() == [[3, 1]]
    assert loaded.value(np.array([0.5, 3.0])) == t.value(np.array([0.5, 3.0]))
    with pytest.raises(BranchError):
        loaded.value(np.array([-0.5, 3.0]))


@pytest.fixture
def picklable():
    """Pickle tapes through tape_reduce (``tapead.ir.store`` registers it with copyreg)."""
    wired = Tape in copyreg.dispatch_table
    if not wired:
        copyreg.pickle(Tape, store.tape_reduce)
    yield
    if not wired:
        copyreg.dispatch_table.pop(Tape, None)


def test_pickle_round_trip(picklable):
    for t in tapes().values():
        for protocol in (2, pickle.HIGHEST_PROTOCOL):
            blob = pickle.dumps(t, protocol=protocol)  # fn (often a lambda) is dropped, not pickled
            _same_tape(t, pickle.loads(blob))
    assert store.tape_reduce(t)[0] is store.from_bytes


# ---- hand-made bad files: each is refused with a message saying what is wrong ---------------------------------
def _split(data):
    _, _, size = struct.unpack_from("<7sII", data)
    return json.loads(data[15:15 + size]), data[15 + size:-32]


def _seal(header, arrays, version=1, magic=b"TAPEAD\0"):
    text = json.dumps(header).encode() if isinstance(header, dict) else header
    body = struct.pack("<7sII", magic, version, len(text)) + text + arrays
    return body + hashlib.sha256(body).digest()


def _edit(**changes):
    header, arrays = _split(store.to_bytes(tapes()["params_two_args"]))
    header.update(changes)
    return _seal(header, arrays)


@pytest.mark.parametrize("data, message", [
    (b"", "only 0 bytes"),
    (b"PICKLE\0" + bytes(60), "does not start with"),
    (_seal({}, b"", version=3), "version 3 is not supported"),
    (store.to_bytes(tapes()["no_ops"])[:-1] + b"\0", "checksum"),
    (store.to_bytes(tapes()["no_ops"]) + b"\0", "checksum"),
    (_seal(b"{not json", b""), "not valid UTF-8 JSON"),
    (_seal(b"\xff\xfe", b""), "not valid UTF-8 JSON"),
    (_seal(b"[" * 100_000, b""), "not valid UTF-8 JSON"),
    (_seal(b"[1, 2]", b""), "JSON object"),
    (_edit(ops=[["frobnicate", 2]]), "frobnicate"),
    (_edit(ops=[["add", 3]]), "takes 3 arguments"),
    (_edit(ops="add"), "ops must be"),
    (_edit(input_shapes=[[3], [-3]]), "dimension -3"),
    (_edit(input_shapes=[[3], [True, 3]]), "dimension True"),
    (_edit(input_shapes=[[3], [3.0]]), "dimension 3.0"),
    (_edit(param_shape=[2] * 40), "at most 32"),
    (_edit(output_shape=[2]), "inconsistent"),
    (_edit(input_shapes=[[2**20], [2**20, 2**20]]), "inconsistent"),
    (_edit(n_consts=0), "announces"),
    (_edit(n_code="3"), "n_code must be"),
    (_seal(b"{}", b""), "input_shapes"),
])
def test_bad_files_are_refused(data, message):
    with pytest.raises(TapeFormatError, match=message):
        store.from_bytes(data)


def test_bad_code_is_refused():
    header, arrays = _split(store.to_bytes(tapes()["no_ops"]))
    mul = [["mul", 2]]
    header.update(n_code=1, ops=mul, n_outputs=2)
    outs = np.array([0, 1], "<i4").tobytes()
    for record, message in [((5, 0, 1, -1), "op table has 1 entries"), ((0, 0, 2, -1), "argument 1 is slot 2"),
                            ((0, 0, 1, 7), "unused argument 2")]:
        with pytest.raises(TapeFormatError, match=message):
            store.from_bytes(_seal(header, np.array(record, "<i4").tobytes() + outs))
    with pytest.raises(TapeFormatError, match="expected the bytes"):
        store.from_bytes("TAPEAD")


# ---- the fuzz --------------------------------------------------------------------------------------------------
def _mutants(rng, data, count):
    """Byte flips, truncations, appended junk and splices: 3/4 get a valid checksum (resealed) so the
    structural checks after the checksum are exercised too."""
    arrays = 15 + struct.unpack_from("<I", data, 11)[0]
    for i in range(count):
        body = bytearray(data[:-32])
        kind = i % 4
        lo = arrays if i % 3 and arrays < len(body) else 15  # two thirds of the edits hit the arrays
        if kind == 0:
            for _ in range(rng.integers(1, 4)):
                body[rng.integers(lo, len(body))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            body = body[:rng.integers(len(body))]
        elif kind == 2:
            body += rng.bytes(int(rng.integers(1, 40)))
        else:
            at = int(rng.integers(lo, len(body)))
            body[at:at + 4] = struct.pack("<i", int(rng.choice([-1, 0, 1, 2, 3, 7, 2**31 - 1, -2**31])))
        resealed = (i // 4) % 4 != 0
        yield bytes(body) + (hashlib.sha256(body).digest() if resealed else data[-32:])


def test_corruption_fuzz(tmp_path):
    rng = np.random.default_rng(1234)
    counts = {"refused": 0, "loaded": 0, "evaluated": 0}
    survivors = []
    for name, t in tapes().items():
        data = store.to_bytes(t)
        for j, mutant in enumerate(_mutants(rng, data, 250)):
            try:
                loaded = tapead.Function(store.from_bytes(mutant))
            except TapeFormatError:
                counts["refused"] += 1
                continue
            counts["loaded"] += 1
            xs, p = _args(loaded, rng, n=3)
            try:
                loaded.evaluate(*xs, params=p)
                counts["evaluated"] += 1
            except BranchError:  # a mutated comparison may send the points down another path: refused, fine
                pass
            if mutant != data and len(survivors) < 40:
                survivors.append(store.save(loaded, tmp_path / f"{name}-{j}.tape"))
    print(counts)
    assert counts["refused"] + counts["loaded"] >= 1000 and counts["refused"] > 500 and counts["loaded"] > 40, counts
    assert counts["evaluated"] > counts["loaded"] // 2, counts
    # compile and run a sample of the surviving mutants in another process: a crash there cannot take us down
    script = """
import sys, numpy as np, tapead
from tapead.ir import store
from tapead.errors import BranchError
rng = np.random.default_rng(0)
for path in sys.argv[1:]:
    t = tapead.load(path)
    xs = [rng.uniform(0.1, 2.0, size=(3,) + s) for s in t.input_shapes]
    p = None if t.param_shape is None else rng.normal(size=t.param_shape)
    try:
        v, ref = t.value(*xs, params=p), t.evaluate(*xs, params=p)
        assert np.allclose(v, ref, rtol=1e-12, atol=0, equal_nan=True), (path, v, ref)
        if t.n_outputs == 1:
            t.value_and_gradient(*xs, params=p)
    except BranchError:
        pass
print("ran", len(sys.argv) - 1)
"""
    done = subprocess.run([sys.executable, "-c", script, *map(str, survivors)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"ran {len(survivors)}" and len(survivors) >= 20
