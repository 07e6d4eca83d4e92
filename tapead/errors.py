"""The exception hierarchy: every tapead error is a TapeadError and also the builtin it resembles."""


class TapeadError(Exception):
    """Root of every error tapead raises on purpose."""


class TracingError(TapeadError, TypeError):
    """An operation on a traced value that a static tape cannot represent."""


class InputError(TapeadError, ValueError):
    """An argument (input, params or out=) has the wrong shape, dtype, layout or kind."""


class BranchError(TapeadError, RuntimeError):
    """The function took another path through Python control flow than the one recorded."""


class TapeFormatError(TapeadError, ValueError):
    """A tape (built in memory or loaded from a file) is malformed."""


class CompileError(TapeadError, RuntimeError):
    """LLVM rejected the code generated for a tape (a bug in tapead: please report it)."""
