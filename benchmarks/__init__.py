"""Benchmarks of tapead against hand-written numba gradients (the limit) and other AD libraries (the peers).

Run them with ``tapead bench`` or ``python -m benchmarks``; ``benchmarks.suite.run`` is the programmatic entry.
Optional libraries (numba, jax, torch, casadi, autograd) are imported only when used; missing ones are skipped.
"""
