"""The trade limits both services share."""

from __future__ import annotations

import doctest

from schemas import limits


def test_docstring_examples_run() -> None:
    result = doctest.testmod(limits)
    assert result.attempted > 0 and result.failed == 0
