"""``python -m collector --record FILE``: the frames of a live run as JSON lines, the format
``python -m collector.feed --replay FILE`` serves again."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

__all__ = ["FrameRecorder"]

logger = logging.getLogger(__name__)


class FrameRecorder:
    """Appends each frame that is a JSON object as one line, byte for byte when it has no line
    break (otherwise re-serialised compactly). Other frames are skipped and counted: they are in
    the DLQ already, and a JSONL file cannot hold them.

    :param path: the file; created or truncated.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] = open(path, "wb")  # closed by close()
        self.written = 0
        self.skipped = 0

    def write(self, raw: bytes) -> None:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                self.skipped += 1
                return
            if b"\n" in raw or b"\r" in raw:
                raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        except (ValueError, RecursionError):  # not JSON, or nested deeper than json goes
            self.skipped += 1
            return
        self._fh.write(raw + b"\n")
        self.written += 1

    def close(self) -> None:
        self._fh.close()
        logger.info(
            "recorded %d frame(s) to %s (%d non-JSON frame(s) not recorded)",
            self.written,
            self.path,
            self.skipped,
        )
