"""Lennard-Jones energy for any number of atoms (atom i at x[3i:3i+3]), shared by the large-tape tests."""
import numpy as np


def lj_any(x):
    p = x.reshape(-1, 3)
    i, j = np.triu_indices(p.shape[0], 1)
    d = p[i] - p[j]
    r2 = np.sum(d * d, axis=1)
    r6inv = 1.0 / r2 ** 3
    return np.sum(4.0 * (r6inv ** 2 - r6inv))
