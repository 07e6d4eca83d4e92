"""The numpy surface traced values dispatch to, as one registry of named entry points.

``tracer`` defines the traced types; what their numpy operations do lives in the modules above it (numpy_api,
elementwise, maparray, axisloops, contract), which register their entry points here when they load. So ``tracer``
imports none of them, and every entry point has one name and one owner.
"""
from __future__ import annotations

from ..errors import TracingError


def _not_installed(*args, **kwargs):
    raise TracingError("tapead's numpy surface is not loaded: import tapead (not tapead.tracer alone)")


class Surface:
    """The numpy surface traced values dispatch to, by name: numpy_api (ufuncs and numpy functions),
    elementwise (astype), maparray and axisloops (loops), contract (products as loops), gather (rows picked by
    index arrays) implement it and register
    their entry points here when they load, so this module imports none of them (``import tapead`` loads them
    all). One named slot per entry point; an unregistered one says how to load it."""

    NAMES = ("array_ufunc", "array_function", "cast", "apply_map", "map_recorder", "axis_loop", "contract",
             "gather")
    __slots__ = NAMES

    def __init__(self):
        for name in self.NAMES:
            setattr(self, name, _not_installed)


SURFACE = Surface()


def install(**entries) -> None:
    """Register entry points of the numpy surface (see ``Surface``); an unknown name is a programming error."""
    unknown = set(entries) - set(Surface.NAMES)
    if unknown:
        raise TypeError(f"unknown numpy-surface entry points: {sorted(unknown)}")
    for name, fn in entries.items():
        setattr(SURFACE, name, fn)
