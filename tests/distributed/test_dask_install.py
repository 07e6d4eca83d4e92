"""The installed Dask pair: dask and distributed must be the same release, or tests fail with what to install."""
from __future__ import annotations

from importlib import metadata

import pytest


def test_dask_and_distributed_are_one_release():
    core, dist = metadata.version("dask"), metadata.version("distributed")
    assert core == dist, (f"dask {core} with distributed {dist}: tapead's Dask path needs one release of both; "
                          "install it with: pip install -U 'dask[array,distributed]>=2024.8.0'")


def test_the_dask_path_names_a_mismatched_pair(monkeypatch):
    from tapead.distributed import dask_array

    real = metadata.version
    monkeypatch.setattr(metadata, "version",
                        lambda name: "2021.4.1" if name == "distributed" else real(name))
    message = dask_array.dask_pair_error()
    assert message is not None and "2021.4.1" in message and "dask[array,distributed]" in message


def test_a_matching_pair_is_accepted():
    from tapead.distributed import dask_array

    assert dask_array.dask_pair_error() is None


def test_dask_is_a_test_dependency_not_an_optional_one():
    import dask.array  # noqa: F401  (a failure here is an install error, never a skip)
    import distributed  # noqa: F401
