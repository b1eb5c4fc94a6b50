"""``python -m stream_processor``: see :mod:`stream_processor.jobs.pipeline`."""

from __future__ import annotations

import sys

from stream_processor.jobs.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
