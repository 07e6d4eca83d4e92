"""Pure tape -> tape transforms: reverse and forward mode (of loops too), Hessians, partial separability,
sparsity, simplification, and ``kernelspec``: which derived tape each kind of kernel compiles.
"""
