"""Settings of the forecast explorer app, from ``STREAMLIT_*`` environment variables
(``STREAMLIT_PORT`` is the stack's, in ``infra.config``).

Streamlit itself reads ``STREAMLIT_<SECTION>_<OPTION>`` (e.g. ``STREAMLIT_SERVER_PORT``); the names
here match no Streamlit option, so the two never mix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.settings import seconds_setting

__all__ = ["ExplorerSettings"]

#: bars of the horizon's last minute can still arrive after it ends
LATE_BARS = timedelta(minutes=1)


@dataclass(frozen=True, kw_only=True)
class ExplorerSettings:
    """
    :param refresh_seconds: ``STREAMLIT_REFRESH``: how often the fan chart re-reads the bars
        while a browser shows a run whose horizon is open; 0 turns live refresh off
    :param cache_ttl_seconds: ``STREAMLIT_CACHE_TTL``: how long runs, forecasts and backtests are
        cached (live bars are cached for the refresh interval)

    >>> ExplorerSettings.from_env({"STREAMLIT_REFRESH": "5s"}).refresh_seconds
    5.0
    >>> ExplorerSettings.from_env({"STREAMLIT_CACHE_TTL": "soon"})
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: STREAMLIT_CACHE_TTL='soon': expected a duration like \
'10 seconds', '500 ms', '5m' or '6h'
    >>> ExplorerSettings.from_env({"STREAMLIT_CACHE_TTL": "0"})
    Traceback (most recent call last):
    ...
    schemas.settings.SettingsError: STREAMLIT_CACHE_TTL='0' must be at least 0.001 s
    """

    refresh_seconds: float = 10.0
    cache_ttl_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExplorerSettings:
        env = os.environ if env is None else env
        return cls(
            refresh_seconds=seconds_setting(env, "STREAMLIT_REFRESH", cls.refresh_seconds),
            cache_ttl_seconds=seconds_setting(
                env, "STREAMLIT_CACHE_TTL", cls.cache_ttl_seconds, minimum_s=0.001
            ),
        )

    def refresh_for(self, horizon_end: datetime, now: datetime) -> float | None:
        """The fan's refresh interval: while the horizon is open (plus a minute for late bars)
        new bars change it; after that redrawing it would only load the browser.

        >>> from datetime import UTC
        >>> end = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        >>> s = ExplorerSettings()
        >>> s.refresh_for(end, end), s.refresh_for(end, end + timedelta(minutes=2))
        (10.0, None)
        """
        if not self.refresh_seconds or now > horizon_end + LATE_BARS:
            return None
        return self.refresh_seconds

    @property
    def bars_ttl_seconds(self) -> float:
        """Live bars are re-read at every refresh, not only when the longer cache expires."""
        return min(self.refresh_seconds or self.cache_ttl_seconds, self.cache_ttl_seconds)
