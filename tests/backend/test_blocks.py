"""Straight-line code is split into basic blocks of at most ``codegen.BLOCK`` instructions (at O0 a block LLVM's
fast selector cannot finish goes to the DAG selector whole, quadratic in its length), and splitting changes no
bits."""
from __future__ import annotations

import numpy as np

import tapead
from tapead.backend import codegen
from tapead.ir.interpret import interpret
from tapead.transforms import ad


def masked_max(x):
    """NaN-masked selects (``fcmp une``) over rows that stay scalar: the case that took 21 s to select."""
    return np.sum(np.max(np.sin(x.reshape(8, 40)), axis=0)) + np.sum(np.where(x > 0.1, x * x, 0.0))


def test_straight_line_code_is_split_into_bounded_blocks():
    x = np.sin(np.arange(320) * 0.37) + 0.05
    fun = tapead.record(masked_max, x)
    grad = ad.value_and_grad(fun.tape)
    longest = run = 0
    for line in codegen.lower(grad, "k").splitlines():
        if line.endswith(":") or line.startswith("define"):
            run = 0
        elif line.startswith("  %"):
            run += 1
            longest = max(longest, run)
    assert len(grad.code) > 2 * codegen.BLOCK
    assert longest < 6 * codegen.BLOCK  # (an op is at most a few IR lines)
    x1 = x[::-1].copy()
    want = interpret(grad, x1[None])[0][0]
    assert fun.value(x1) == want[0]
    assert np.array_equal(fun.gradient(x1), want[1:])
