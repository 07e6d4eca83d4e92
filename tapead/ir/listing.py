"""The readable listing of a tape (``str(tape)``) and its op counts: how people read the IR."""
from __future__ import annotations

from ..table.ops import BY_CODE


def listing(tape) -> str:
    """One line per instruction (``%5 = mul %2 %4``; constants shown by value), a line per map, the guards and
    the outputs."""
    lines = [f"tape: {len(tape)} ops, inputs {list(tape.input_shapes)} -> slots %0..%{tape.n_inputs - 1}"
             + (f", params {tape.param_shape} -> %{tape.n_inputs}..%{tape.first_const - 1}"
                if tape.n_params else "")]
    first = tape.first_result
    for i, (code, *args) in enumerate(tape.code.tolist()):
        if code < 0:  # a map's row (see tapead.structure)
            if args[1] == 0:
                mp = tape.maps[args[0]]
                lines.append(f"  %{first + i}..%{first + i + mp.rows - 1} = map {args[0]}: {len(mp.body)} ops x "
                             f"{mp.n}, outputs {list(mp.kinds)}")
            continue
        row = BY_CODE[code]
        lines.append(f"  %{first + i} = {row.name} " + " ".join(tape.slot_name(a) for a in args[:row.arity]))
    for slot, expected in tape.guards.tolist():
        lines.append(f"  guard %{slot} == {bool(expected)}")
    lines.append(f"  return {tape.output_shape}: " + " ".join(tape.slot_name(s) for s in tape.outputs))
    return "\n".join(lines)


def op_counts(tape) -> dict[str, int]:
    """How many instructions of each op the tape holds; a map's body counts once per iteration."""
    names = [BY_CODE[c].name for c in tape.code[:, 0].tolist() if c >= 0]
    counts = {n: names.count(n) for n in set(names)}
    for mp in tape.maps:
        for name, count in op_counts(mp.body).items():
            counts[name] = counts.get(name, 0) + count * mp.n
    return dict(sorted(counts.items()))
