"""The ``tapead`` command: ``bench`` (the benchmark suite), ``info`` (versions, CPU, cache) and ``export``."""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the source tree holding tapead/ and benchmarks/
OPTIONAL = ("numba", "jax", "jaxlib", "torch", "casadi", "autograd", "rich", "matplotlib")
FEATURES = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512vl", "avx512bw", "avx512fp16",
            "neon", "sve", "sve2")


class UsageError(Exception):
    """A bad command-line argument found after parsing (exit code 2)."""


class Unavailable(Exception):
    """Something the command needs is not installed (exit code 1)."""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tapead`` command."""
    p = argparse.ArgumentParser(prog="tapead", description="Tape-compiling reverse-mode automatic "
                                "differentiation: benchmarks, environment information and kernel export.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    b = sub.add_parser("bench", help="time tapead against hand-written gradients and other AD libraries",
                       description="Time tapead, the hand-written numba limit and peer libraries alternately; "
                       "print median times and ratios. Needs the source tree (benchmarks/ and tests/).")
    b.add_argument("--functions", type=_csv, help="comma-separated functions (default: all; --quick: a few)")
    b.add_argument("--peers", type=_csv, help="comma-separated peers, 'all' (default) or 'none'")
    b.add_argument("--batch", type=_positive, help="points per batch call (default 10000; --quick 1000)")
    b.add_argument("--threads", type=_positive, default=1, help="threads for batch calls (default 1)")
    b.add_argument("--repeats", type=_positive, help="round-robin rounds; the median is reported (default 7)")
    b.add_argument("--quick", action="store_true", help="a small, fast run (a smoke test)")
    b.add_argument("--json", metavar="FILE", help="also write the full results as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="also plot the ratios to the limit (needs matplotlib)")
    b.add_argument("--threads-policy", action="store_true", help="instead: the default thread count vs one "
                   "thread (finite-element assembly, lj and rosenbrock batches)")
    b.add_argument("--branches", action="store_true", help="instead: a batch taking both sides of an `if` vs "
                   "the tapead.where version")
    b.add_argument("--large", action="store_true", help="instead: cost against size for large scalar tapes "
                   "(1e3-1e6 ops), dense Hessians of many outputs and first results of small tapes")
    b.add_argument("--arrays", action="store_true", help="instead: array programs as people write them ((3, n) "
                   "layouts, stacks and det, data in closures, X @ w, x.T @ A @ x): first gradient and replay "
                   "against JAX and hand-written gradients, one process per case (--quick: small sizes)")
    b.add_argument("--cartpole", action="store_true", help="instead: cart-pole multiple shooting (N = 60, 200): "
                   "sparse Jacobian and Lagrangian Hessian, first calls and per evaluation, vs CasADi")
    b.add_argument("--steps", action="store_true", help="instead: RK4 over 1,000 and 10,000 steps of a Python "
                   "loop: first gradient and replay vs JAX's lax.fori_loop and hand-written sensitivities "
                   "(--quick: 200 steps)")
    b.add_argument("--scale", action="store_true", help="instead: cost against size for vectorised numpy: "
                   "Lennard-Jones gradients (10-300 atoms) and Hessians (30, 100) vs numba and JAX, many-output "
                   "Jacobian and Hessians; one process per case (--quick: 10 and 30 atoms, Hessian at 10)")
    b.add_argument("--timeout", type=_positive, help="seconds per --scale case before it is reported as a timeout "
                   "(default 600)")
    b.add_argument("--dask", action="store_true", help="instead: lj30 gradients at 10^6 and 10^7 points on a "
                   "2-worker Dask LocalCluster vs one process (needs tapead[dask]; --quick: 10^5 points)")
    sub.add_parser("info", help="versions, CPU and kernel cache", description="Print versions of tapead and "
                   "its dependencies, the host CPU as LLVM sees it, and the kernel cache.")
    e = sub.add_parser("export", help="record a function and write its kernels as .o/.so/.h/.ll",
                       description="Record MODULE:FUNCTION at the given arguments and export its kernels.")
    e.add_argument("target", metavar="MODULE:FUNCTION", help="e.g. mymodel:energy (MODULE importable from here)")
    e.add_argument("--x0", action="append", required=True, metavar="VALUES",
                   help="one argument: comma-separated floats ('1,2,3'; '2.0' is a scalar, '2.0,' a 1-vector) "
                   "or a .npy file; repeat for several arguments")
    e.add_argument("--params", metavar="VALUES", help="params, in the same format as --x0")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--name", help="symbol prefix and file name (default: the function's name)")
    e.add_argument("--cpu", help="target CPU, e.g. x86-64 for portable code (default: this host)")
    return p


# ---- bench ---------------------------------------------------------------------------------------------------


def _benchmarks():
    if (ROOT / "benchmarks" / "__init__.py").exists() and str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        suite = importlib.import_module("benchmarks.suite")
    except ImportError as e:
        raise Unavailable(f"the benchmarks are not importable ({e}): they live in the source tree next to the "
                           "tapead package; run `tapead bench` from a source checkout installed with "
                           "`pip install -e .[bench]`") from None
    return suite


def _check_names(given, valid, what: str, extra: str = "") -> None:
    bad = [g for g in given if g not in valid]
    if bad:
        raise UsageError(f"unknown {what} {', '.join(bad)}; choose from {', '.join(valid)}{extra}")


def _print_table(suite, result: dict, rich_ok: bool) -> None:
    if not rich_ok:
        print(suite.format_table(result))
        return
    from rich.console import Console
    from rich.table import Table
    table = Table(title="tapead benchmarks (median; x = ratio)")
    for i, h in enumerate(suite.HEADER):
        table.add_column(h, justify="right" if 3 <= i <= 5 else "left")
    for row in suite.table_rows(result):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(suite.format_table({"rows": [], "tapes": result["tapes"], "summary": result.get("summary")}).strip())


def _rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return sys.stdout.isatty()


def bench(args) -> int:
    """``tapead bench``: run the suite and print the table."""
    suite = _benchmarks()
    if args.threads_policy or args.branches:
        return _focused(args)
    if args.dask:
        return _bench_dask(args)
    if args.large:
        from benchmarks import large
        return large.main(["--steps", "100,1000,10000"] if args.quick else [])
    if args.scale:
        from benchmarks import scale
        argv = ["--atoms", "10,30", "--hessian-atoms", "10", "--repeats", "3"] if args.quick else []
        argv += ["--repeats", str(args.repeats)] if args.repeats else []
        argv += ["--timeout", str(args.timeout)] if args.timeout else []
        return scale.main(argv + (["--json", args.json] if args.json else []))
    if args.arrays:
        from benchmarks import arrays
        rows = arrays.run(quick=args.quick, timeout=args.timeout or 600.0)
        print(arrays.format_table(rows))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        return 1 if any("error" in r for r in rows) else 0
    if args.steps:
        from benchmarks import steps
        return steps.main((["--sizes", "200"] if args.quick else []) + (["--json", args.json] if args.json else []))
    if args.cartpole:
        from benchmarks import cartpole
        return cartpole.main(["--sizes", "20", "--repeats", "3"] if args.quick else
                             (["--repeats", str(args.repeats)] if args.repeats else []))
    from benchmarks import cases, peers
    if args.functions is not None:
        if not args.functions:
            raise UsageError("--functions needs at least one name")
        _check_names(args.functions, list(cases.TASKS), "function(s)")
    peer_names = None
    if args.peers is not None:
        peer_names = [] if args.peers == ["none"] else list(peers.PEERS) if args.peers == ["all"] else args.peers
        _check_names(peer_names, list(peers.PEERS), "peer(s)", ", or 'all' or 'none'")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("tapead bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 1
    fancy = _rich()
    if fancy:
        from rich.console import Console
        status = Console(stderr=True).status("benchmarking")
        status.start()
        progress = status.update
    else:
        status = None

        def progress(msg):
            print(f"... {msg}", file=sys.stderr, flush=True)
    try:
        result = suite.run(args.functions, peer_names, batch=args.batch, threads=args.threads,
                           repeats=args.repeats, quick=args.quick, progress=progress)
    finally:
        if status is not None:
            status.stop()
    _print_table(suite, result, fancy)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        from benchmarks.plot import plot
        plot(result, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def _focused(args) -> int:
    """``--threads-policy`` / ``--branches``: one focused benchmark, printed as a small table."""
    repeats = args.repeats or (3 if args.quick else 7)
    if args.threads_policy:
        from benchmarks import threads
        print(threads.format_rows(threads.run(args.quick, repeats), 0))
    if args.branches:
        from benchmarks import branches
        n = args.batch or (10_000 if args.quick else 100_000)
        print(branches.format_rows(branches.run(n, repeats, args.quick), n))
    return 0


def _bench_dask(args) -> int:
    """``tapead bench --dask``: the scaling benchmark of ``benchmarks/dask_scale.py``."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise Unavailable("--dask needs Dask: pip install 'tapead[dask]'") from None
    from benchmarks import dask_scale
    sizes = (10**5,) if args.quick else dask_scale.SIZES
    chunk = 10**4 if args.quick else dask_scale.CHUNK
    result = dask_scale.run(sizes, chunk, quick=args.quick, repeats=args.repeats or (1 if args.quick else 3),
                            progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    print(dask_scale.format_result(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"results written to {args.json}")
    return 0


# ---- info ----------------------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def info(args) -> int:
    """``tapead info``: versions, CPU name and features, kernel cache."""
    import llvmlite
    import llvmlite.binding as llvm

    import tapead
    llvm.initialize_native_target()
    rows = [("tapead", tapead.__version__), ("python", platform.python_version()), ("numpy", np.__version__),
            ("llvmlite", llvmlite.__version__), ("LLVM", ".".join(map(str, llvm.llvm_version_info)))]
    rows += [(name, _version(name)) for name in OPTIONAL]
    features = llvm.get_host_cpu_features()
    on = [f for f in FEATURES if features.get(f)]
    n_on = sum(1 for v in features.values() if v)
    rows += [("platform", f"{platform.system()} {platform.machine()}"),
             ("cpu", llvm.get_host_cpu_name()), ("cores", str(os.cpu_count())),
             ("cpu features", f"{' '.join(on) or '-'} ({n_on} of {len(features)} LLVM features on)")]
    try:
        from tapead import cache
        c = cache.info()
        state = "on" if c.get("enabled", True) else "off (TAPEAD_CACHE=0)"
        rows += [("kernel cache", f"{c['location']} ({state}), {c['entries']} entries, "
                  f"{c['bytes'] / 1e6:.1f} MB")]
    except (ImportError, AttributeError, KeyError, OSError) as e:
        rows += [("kernel cache", f"unavailable ({type(e).__name__}: {e})")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


# ---- export --------------------------------------------------------------------------------------------------


def parse_array(text: str, what: str) -> np.ndarray:
    """``'1,2,3'`` -> a vector, ``'2.0'`` -> a scalar, ``'2.0,'`` -> a 1-vector, ``'a.npy'`` -> its array."""
    if text.strip().endswith(".npy"):
        try:
            return np.asarray(np.load(text.strip(), allow_pickle=False), dtype=np.float64)
        except (OSError, ValueError) as e:
            raise UsageError(f"{what}: cannot read {text!r} as a float .npy file ({e})") from None
    body = text.strip().strip("[]")
    parts = [p.strip() for p in body.split(",")]
    try:
        values = [float(p) for p in parts if p]
    except ValueError:
        raise UsageError(f"{what}: expected comma-separated numbers like '1,2,3' or a .npy path, got "
                         f"{text!r}") from None
    if not values and body.strip(", "):
        raise UsageError(f"{what}: no numbers in {text!r}")
    return np.array(values[0]) if len(parts) == 1 and values else np.array(values)


def _function(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected MODULE:FUNCTION (e.g. mymodel:energy), got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(f"cannot import module {module_name!r} ({e}); run from its directory or set "
                         "PYTHONPATH") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise UsageError(f"{target} is not callable")
    return obj


def export(args) -> int:
    """``tapead export``: record MODULE:FUNCTION at ``--x0`` and write its kernels."""
    import tapead
    f = _function(args.target)
    xs = [parse_array(t, f"--x0 #{i + 1}") for i, t in enumerate(args.x0)]
    params = None if args.params is None else parse_array(args.params, "--params")
    try:
        from tapead import export as exporter
        exporter.export  # noqa: B018 - fail here, before recording, if this build has no exporter
    except (ImportError, AttributeError):
        print("tapead export: this installation of tapead has no exporter (tapead.export)", file=sys.stderr)
        return 1
    name = args.name or getattr(f, "__name__", "f")
    if not name.isidentifier():
        raise UsageError(f"--name must be a C identifier, got {name!r}")
    try:
        tape = tapead.record(f, *xs, params=params)
    except Exception as e:  # noqa: BLE001 - the user's function failed: say so without a traceback
        print(f"tapead export: recording {args.target} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        paths = exporter.export(tape, args.out, name, cpu=args.cpu)
    except (tapead.TapeadError, OSError) as e:
        print(f"tapead export: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"recorded {args.target}: {len(tape)} ops, inputs {list(tape.input_shapes)}")
    items = paths.items() if isinstance(paths, dict) else enumerate(paths or [])
    for kind, path in items:
        print(f"  {kind}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``tapead`` command; returns the exit code (2 for bad arguments)."""
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        return {"bench": bench, "info": info, "export": export}[args.command](args)
    except UsageError as e:
        print(f"tapead {args.command}: error: {e}\n(see `tapead {args.command} --help`)", file=sys.stderr)
        return 2
    except Unavailable as e:
        print(f"tapead {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
