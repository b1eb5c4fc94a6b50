"""The trade limits both services share."""

from __future__ import annotations

import pytest

from schemas.limits import TradeLimits
from schemas.settings import SettingsError


@pytest.mark.parametrize(
    ("price", "ok"),
    [
        (1e-12, True),
        (1e12, True),
        (0.0, False),
        (-1.0, False),
        (1e308, False),
        (float("inf"), False),
        (float("nan"), False),
        (9.9e-13, False),
    ],
)
def test_price_bounds(price: float, ok: bool) -> None:
    assert TradeLimits().price_ok(price) is ok


@pytest.mark.parametrize(
    ("volume", "ok"),
    [
        (0.0, True),
        (1e-12, True),
        (1e18, True),
        (-1.0, False),
        (1e-300, False),
        (1e19, False),
        (float("inf"), False),
        (float("nan"), False),
    ],
)
def test_volume_bounds(volume: float, ok: bool) -> None:
    assert TradeLimits().volume_ok(volume) is ok


def test_bounds_come_from_the_environment_and_are_checked() -> None:
    limits = TradeLimits.from_env({"TRADE_MAX_PRICE": "1e6", "TRADE_MAX_VOLUME": "5"})
    assert (limits.max_price, limits.max_volume, limits.min_price) == (1e6, 5.0, 1e-12)
    with pytest.raises(SettingsError, match="TRADE_MIN_PRICE=2.0 and TRADE_MAX_PRICE=1.0"):
        TradeLimits(min_price=2.0, max_price=1.0)
    with pytest.raises(SettingsError, match="TRADE_MAX_VOLUME='lots' is not a number"):
        TradeLimits.from_env({"TRADE_MAX_VOLUME": "lots"})
