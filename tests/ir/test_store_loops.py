"""Tape files of tapes with loops (format version 2): loops stay loops through save, load, pickle and Dask, and a
damaged or hostile version-2 file is refused or runs correctly."""
from __future__ import annotations

import hashlib
import json
import pickle
import struct

import numpy as np
import pytest

import tapead
from tapead.ir import store, structure
from tapead.transforms import ad
from tapead.errors import TapeFormatError
from tapead.ir.structure import Map
from tapead.ir.tape import Tape
from test_hostile_files import FUZZ_CHECK, _run, fuzz
from test_maps import CASES, _moved


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a, np.float64)).tobytes()


def _tapes() -> dict:
    out = {}
    for name in ("lj", "morse", "softplus", "params", "vector_out"):
        f, args0, params = CASES[name]
        t = tapead.record(f, *args0, params=params)
        out[name] = (t, args0, params)
        if t.output_shape == ():
            out[name + ".grad"] = (tapead.grad(t), args0, params)  # scatter outputs
            # a loop of tangents: the structured HVP (hvp_tape keeps the lighter unrolled form of tapes this small)
            out[name + ".hvp"] = (tapead.Function(ad.jvp(ad.grad(t.tape))), args0 + args0, params)
    product = tapead.record(_product, np.linspace(-1, 1, 105))
    out["product"] = (product, (np.linspace(-1, 1, 105),), None)
    out["product.grad"] = (tapead.grad(product), (np.linspace(-1, 1, 105),), None)  # G Bᵀ and Aᵀ G
    return out


def _product(x):
    A, B = x[:60].reshape(12, 5), x[60:].reshape(5, 9)
    return np.sum(np.sin(A @ B))


TAPES = _tapes()


@pytest.mark.parametrize("name", sorted(TAPES))
def test_loops_survive_the_file_format_bitwise(name, tmp_path):
    t, args0, params = TAPES[name]
    assert t.maps
    data = store.to_bytes(t)
    assert struct.unpack_from("<I", data, 7)[0] == 2 and store.to_bytes(t) == data
    for loaded in (tapead.Function(store.from_bytes(data)), tapead.load(tapead.save(t, tmp_path / "t.tape")),
                   pickle.loads(pickle.dumps(t))):
        assert loaded.hash == t.hash and len(loaded.maps) == len(t.maps)
        assert store.to_bytes(loaded) == data
        x1 = _moved(args0)
        assert _bits(loaded.value(*x1, params=params)) == _bits(t.value(*x1, params=params))
        assert _bits(loaded.evaluate(*x1, params=params)) == _bits(t.evaluate(*x1, params=params))
    assert len(data) < len(store.to_bytes(structure.scalar(t.tape)))


def test_a_large_loop_file_holds_the_program_not_its_unrolled_size():
    from functions import lj
    side = np.arange(5) * 1.1
    x = np.stack(np.meshgrid(side, side, side[:4], indexing="ij"), -1).reshape(-1, 3).ravel()  # 100 atoms
    t = tapead.record(lj, x + np.random.default_rng(0).uniform(-0.05, 0.05, x.size))
    data = store.to_bytes(tapead.grad(t))
    assert len(data) < 400_000 and 10 * len(data) < len(store.to_bytes(structure.scalar(tapead.grad(t).tape)))
    g = tapead.Function(store.from_bytes(data))
    assert _bits(g.value(x)) == _bits(tapead.grad(t).value(x))


def _with_body(body: Tape, n: int = 2) -> Tape:
    """A tape running ``body`` (one input vector) as a loop over ``n`` copies of the input, summed."""
    k = body.n_inputs
    return Tape(code=np.array([[structure.MAP_ROW, 0, 0, 0]]), consts=np.zeros(0), input_shapes=((k,),),
                param_shape=None, outputs=np.array([k]), output_shape=(),
                maps=(Map(body, np.tile(np.arange(k), (n, 1)), ("sum",), np.zeros((n, 0)), 0),))


def test_a_body_holding_a_loop_is_refused():
    t = TAPES["lj"][0].tape
    inner = _with_body(tapead.record(lambda x: np.sum(np.sin(x)), np.ones(3)).tape)
    store.from_bytes(store.to_bytes(inner))  # one level of loops loads
    with pytest.raises(TapeFormatError, match="holds a loop"):
        store.from_bytes(store.to_bytes(_with_body(t)))


def _seal2(header: dict, arrays: bytes, version: int = 2) -> bytes:
    text = json.dumps(header).encode()
    body = struct.pack("<7sII", b"TAPEAD\0", version, len(text)) + text + arrays
    return body + hashlib.sha256(body).digest()


def _split(data: bytes):
    size = struct.unpack_from("<I", data, 11)[0]
    return json.loads(data[15:15 + size]), data[15 + size:-32]


@pytest.mark.parametrize("change, message", [
    (lambda h: h["maps"][0].update(n=h["maps"][0]["n"] + 1), "announces"),
    (lambda h: h["maps"][0].update(kinds=["every"]), "kinds"),
    (lambda h: h["maps"][0].update(body_bytes=-1), "body_bytes"),
    (lambda h: h["maps"][0].update(n=10**9), "at most"),
    (lambda h: h.update(maps={"n": 1}), "maps must be a list"),
    (lambda h: h.update(maps=[]), "header announces"),
])
def test_bad_loop_headers_are_refused(change, message):
    header, arrays = _split(store.to_bytes(TAPES["lj.grad"][0]))
    change(header)
    with pytest.raises(TapeFormatError, match=message):
        store.from_bytes(_seal2(header, arrays))


def test_a_product_is_stored_by_its_factors():
    t = TAPES["product.grad"][0]
    data = store.to_bytes(t)
    header, _ = _split(data)
    assert [m.get("product") for m in header["maps"]] == [[12, 5, 9], [12, 9, 5], [5, 12, 9]]
    assert len(data) < 12_000  # the factors: 3 x 4 (k (r + c)) bytes plus bodies, not 3 x 4 x 2 k r c
    loaded = store.from_bytes(data)
    assert [type(m).__name__ for m in loaded.maps] == ["Product"] * 3 and loaded.hash == t.tape.hash


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(product=[12, 5]), "three positive integers"),
    (lambda m: m.update(product=[12, 5, 0]), "three positive integers"),
    (lambda m: m.update(product=[9, 5, 12, 1][:3] if False else [6, 5, 18]), "announces|does not fit"),
    (lambda m: m.update(product=[12, 6, 9]), "does not fit"),
    (lambda m: m.update(product=[12, 5, 9], kinds=["sum"]), "does not fit"),
    (lambda m: m.update(product=[10**8, 5, 10**8]), "three positive integers|does not fit"),
])
def test_bad_product_headers_are_refused(change, message):
    header, arrays = _split(store.to_bytes(TAPES["product"][0]))
    change(header["maps"][0])
    with pytest.raises(TapeFormatError, match=message):
        store.from_bytes(_seal2(header, arrays))


def test_a_product_whose_body_is_not_a_dot_product_is_refused():
    t = TAPES["lj"][0]  # an elementwise loop, declared a product of the right counts
    header, arrays = _split(store.to_bytes(t))
    entry = header["maps"][0]
    if entry["n_in"] % 2 or entry["kinds"] != ["each"]:
        entry.update(kinds=["each"] * len(entry["kinds"]))
    with pytest.raises(TapeFormatError):
        store.from_bytes(_seal2(header | {"maps": [dict(entry, product=[1, entry["n_in"] // 2 or 1, entry["n"]])]},
                                arrays))


def test_a_product_file_declaring_more_inputs_than_its_factors_pay_for_is_refused():
    """Its reads are paid for by the factors the file holds (k (r + c) slots), not by the r c 2 k table they
    imply: a 0.6 MB file may not declare 5e8 inputs."""
    from tapead.ir.contraction import Product
    from tapead.ir.structure import placeholder_rows
    r = c = 64
    k = 1024
    n_in = 500_000_000
    product = Product(np.arange(r * k).reshape(r, k), np.arange(k * c).reshape(k, c))
    t = Tape(code=placeholder_rows(0, r * c), consts=np.zeros(0), input_shapes=((n_in,),), param_shape=None,
             outputs=np.array([n_in], np.int32), output_shape=(1,), maps=(product,))
    with pytest.raises(TapeFormatError, match="declares 500,000,000 inputs"):
        store.from_bytes(store.to_bytes(t))


def test_a_pickled_product_is_rebuilt_from_its_factors():
    """A pickle that sets a product's state (cached tables that disagree with its factors) gets its tables built
    from the factors, which validation checks; a record whose cached tables disagree is refused."""
    import copyreg
    import pickle
    from tapead.ir.contraction import Product
    a = np.array([[0, 2, 1], [3, 5, 4]])
    b = np.array([[6, 7], [8, 9], [0, 1]])
    good = Product(a, b)
    forged = np.array(good.tables)
    forged[:, 0] = 13  # a later slot: the map's own row

    class Crafted:
        def __reduce__(self):
            return copyreg._reconstructor, (Product, object, None), dict(good.__dict__, _tables=forged)

    rebuilt = pickle.loads(pickle.dumps(Crafted()))
    assert np.array_equal(rebuilt.tables, good.tables)
    assert np.array_equal(pickle.loads(pickle.dumps(good)).tables, good.tables)
    object.__setattr__(rebuilt, "_tables", forged)
    assert "do not follow from its factors" in rebuilt.consistent()
    t = Tape(code=placeholder_rows_of(4), consts=np.zeros(0), input_shapes=((10,),), param_shape=None,
             outputs=np.arange(10, 14).astype(np.int32), output_shape=(4,), maps=(rebuilt,))
    with pytest.raises(TapeFormatError, match="do not follow"):
        t.check()
    float_factors = Product(a, b)
    object.__setattr__(float_factors, "a", a.astype(np.float64))
    assert float_factors.consistent() is not None


def placeholder_rows_of(rows: int) -> np.ndarray:
    from tapead.ir.structure import placeholder_rows
    return placeholder_rows(0, rows)


def test_a_plain_loop_with_a_dot_body_stays_a_plain_loop_through_a_file():
    """Only a loop written as a product comes back as one: the hash of a saved tape does not change."""
    X2 = np.linspace(-1, 1, 200).reshape(100, 2)
    t = tapead.record(lambda w: np.sum(np.sin(np.sum(X2 * w, axis=1))), np.array([0.3, -0.2]))
    loaded = store.from_bytes(store.to_bytes(t))
    assert [type(m).__name__ for m in loaded.maps] == [type(m).__name__ for m in t.maps]
    assert loaded.hash == t.tape.hash


def test_a_version_1_file_with_loop_rows_is_refused():
    header, arrays = _split(store.to_bytes(TAPES["lj"][0]))
    with pytest.raises(TapeFormatError):
        store.from_bytes(_seal2(header, arrays, version=1))


def _mutate(rng, data: bytes) -> bytes:
    """One edit of a version-2 file, resealed: a byte flip, an int32 set to an edge value (tables, targets and
    code included), or a number of the header's loop records replaced."""
    size = struct.unpack_from("<I", data, 11)[0]
    body = bytearray(data[:-32])
    kind = rng.integers(3)
    if kind == 0:
        body[rng.integers(15 + size, len(body))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        at = 15 + size + 4 * int(rng.integers((len(body) - 15 - size) // 4))
        body[at:at + 4] = struct.pack("<i", int(rng.choice([-1, 0, 1, 2, 3, 5, 9, 2**31 - 1, -2**31])))
    else:
        header = json.loads(bytes(body[15:15 + size]))
        m = header["maps"][int(rng.integers(len(header["maps"])))]
        field = ["n", "n_in", "scatter_size", "body_bytes"][rng.integers(4)]
        m[field] = int(rng.choice([0, 1, 2, 3, 7, 100, 10**5, 10**7, 2**31]))
        text = json.dumps(header).encode()
        body = bytearray(struct.pack("<7sII", b"TAPEAD\0", 2, len(text)) + text + body[15 + size:])
    return bytes(body) + hashlib.sha256(body).digest()


def test_fuzzed_loop_files_are_refused_or_run_correctly(tmp_path):
    sources = [store.to_bytes(TAPES[name][0]) for name in ("lj", "lj.grad", "params.hvp", "softplus.grad")]
    refused, survivors = fuzz(np.random.default_rng(7), sources, _mutate, 1200, tmp_path, keep=25)
    assert refused >= 600 and len(survivors) >= 10, (refused, len(survivors))
    out = _run(FUZZ_CHECK, tmp_path / "cache", *survivors)  # compiled in a child: a crash fails, not aborts
    assert out.strip() == f"ran {len(survivors)}"


def _columnless_loop(n: int) -> Tape:
    """A tape of one loop of ``n`` iterations whose body reads no column (it adds two constants): a few hundred
    bytes on disk whatever ``n`` is."""
    add = tapead.table.ops.OPS["add"].code
    body = Tape(code=[[add, 0, 0, -1]], consts=[1.5], input_shapes=((0,),), param_shape=None, outputs=[1],
                output_shape=(1,))
    loop = Map(body, np.zeros((n, 0), np.int32), ("sum",), np.zeros((n, 0), np.int32), 0)
    return Tape(code=[[structure.MAP_ROW, 0, 0, 0]], consts=[], input_shapes=((1,),), param_shape=None,
                outputs=[1], output_shape=(), maps=(loop,))


def test_a_tiny_file_cannot_declare_ten_million_iterations():
    """The work a loaded file can demand is bounded, not only its bytes."""
    small = store.from_bytes(store.to_bytes(_columnless_loop(100)))
    assert tapead.Function(small).value(np.ones(1)) == 300.0  # (1.5 + 1.5) x 100
    data = store.to_bytes(_columnless_loop(10**7))
    assert len(data) < 2000
    with pytest.raises(TapeFormatError, match="reads no table column"):
        store.from_bytes(data)
    with pytest.raises(TapeFormatError, match="reads no table column"):
        pickle.loads(pickle.dumps(_columnless_loop(10**7)))


def test_the_loops_of_a_loaded_tape_run_a_bounded_number_of_instructions(monkeypatch):
    t = TAPES["lj.grad"][0].tape
    data = store.to_bytes(t)
    work = sum(m.n * len(m.body) for m in t.maps)
    monkeypatch.setattr(store, "MAX_LOOP_WORK", work - 1)
    with pytest.raises(TapeFormatError, match="body instructions per point"):
        store.from_bytes(data)
    monkeypatch.setattr(store, "MAX_LOOP_WORK", work)
    assert store.from_bytes(data).hash == t.hash
