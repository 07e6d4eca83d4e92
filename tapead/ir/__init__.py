"""The IR: the frozen ``Tape`` of fixed-size scalar records and its loops (``structure.Map``), their validation,
listing and file format, and ``interpret``, the reference meaning every evaluator must agree with. Nothing
here compiles or calls native code.
"""
