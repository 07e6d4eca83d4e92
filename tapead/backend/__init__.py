"""Native code: LLVM IR text from tapes (straight-line, chunked, loops, batch loops), MCJIT compilation, the
on-disk kernel cache and the native single-point entry. Loads llvmlite; nothing below it does.
"""
