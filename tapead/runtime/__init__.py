"""Evaluation of Functions on numbers: argument binding, kernel calls and threads, other branch paths, derived
tapes and their cache, Jacobians/Hessians/sparse derivatives, assembly and C export.
"""
