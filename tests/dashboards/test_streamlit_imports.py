"""What the forecast explorer imports before its first chart: the job's simulator (what-if) and
scipy (through ``gbm_analysis.backtest``: the backtest panel's binomial bands) are imported where
they are used, not with the page, so the first page after a start does not wait for them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from infra.streamlit import APP
from tests.conftest import REPO_ROOT

# Runs the page in a fresh interpreter with a setting the page refuses, so it stops right after
# its imports (no Cassandra needed), then lists the modules it loaded.
SCRIPT = f"""
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()
assert [e.value for e in at.error] == [
    "Configuration: STREAMLIT_CACHE_TTL='0' must be at least 0.001 s"
], at.error
print(json.dumps(sorted(sys.modules)))
"""


def test_the_page_imports_neither_scipy_nor_the_simulator() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env={**os.environ, "STREAMLIT_CACHE_TTL": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = set(json.loads(result.stdout.splitlines()[-1]))
    assert "dashboards.charts" in modules and "dashboards.what_if" in modules
    heavy = {"scipy", "gbm_analysis.backtest", "gbm_analysis.forecast", "gbm_analysis.model"}
    assert not heavy & modules
