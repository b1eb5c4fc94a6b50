"""Spark job entry points; each module has one ``main()``."""

from __future__ import annotations

import logging
import os

__all__ = ["configure_logging"]


def configure_logging() -> None:
    """The job's log lines, at ``LOG_LEVEL`` (default ``INFO``), as every job writes them."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
