"""``python -m benchmarks [options]`` is ``tapead bench [options]``."""
import sys

from tapead.cli import main

sys.exit(main(["bench"] + sys.argv[1:]))
