"""The lazy path: Function methods on Dask arrays (graphs of one task per chunk shipping tapes, never Python)
and the worker side that loads them.
"""
