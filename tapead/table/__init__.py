"""The op table: every scalar op as one row (its numpy meaning, LLVM text, derivative rules and facts such as
linearity or commutativity). Only this package knows an op; everything else reads rows.
"""
