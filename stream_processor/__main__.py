"""``python -m stream_processor``: see :mod:`stream_processor.jobs.pipeline`."""

from __future__ import annotations

import os
import sys

from stream_processor.jobs.pipeline import EXIT_STALLED, main

if __name__ == "__main__":
    code = main()
    if code == EXIT_STALLED:
        # A wedged JVM thread would keep the interpreter (and the Spark gateway) alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
