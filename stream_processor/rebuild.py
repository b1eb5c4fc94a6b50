"""``python -m stream_processor.rebuild``: see :mod:`stream_processor.jobs.rebuild`."""

from __future__ import annotations

import sys

from stream_processor.jobs.rebuild import main

if __name__ == "__main__":
    sys.exit(main())
