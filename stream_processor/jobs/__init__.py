"""Spark job entry points; each module has one ``main()``."""

from __future__ import annotations

__all__: list[str] = []
