"""The dtype a traced scalar reports: float64 in every comparison and attribute, except that
``dtype.type(v)`` keeps a traced ``v`` traced.

numpy's mean/var/std of an object array built from traced scalars (``np.mean(np.array([x, x + 2]))``,
``np.mean([x, y])``) finish with ``ret.dtype.type(ret / n)``; with a plain float64 dtype that would cast the
traced result to a float, which tracing refuses.
"""
from __future__ import annotations

import numpy as np


class ScalarDtype:
    _dtype = np.dtype(np.float64)

    def type(self, v=0.0):
        """A traced scalar (whose dtype is this object) unchanged; anything else as np.float64."""
        return v if getattr(v, "dtype", None) is self else np.float64(v)

    def __getattr__(self, name):
        return getattr(self._dtype, name)

    def __eq__(self, other):
        return self._dtype == other

    def __hash__(self):
        return hash(self._dtype)

    def __repr__(self):
        return repr(self._dtype)
