"""Recording: tracers, the numpy surface they answer (ufuncs, array functions, linalg, statistics), loop arrays
that keep vectorised numpy a loop, custom ops, and ``record.trace(f, x) -> Tape``.
"""
