"""The release number: the kernel cache keys machine code by it, so an upgrade never runs an older build."""
__version__ = "0.1.0"
