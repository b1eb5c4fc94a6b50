"""supervisord keeps the stack's long-running processes up without a hand on them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from infra.config import InfraConfig
from infra.streamlit import StreamlitService
from tests.conftest import Stack, infra_cli

pytestmark = pytest.mark.integration


def test_every_service_of_the_stack_runs_under_supervisord(stack: Stack) -> None:
    status = infra_cli("status")
    rows = [line.split() for line in status.stdout.splitlines()[1:] if not line.startswith("state")]
    assert rows and all(row[3] == "RUNNING" for row in rows), status.stdout


def test_a_killed_dashboard_is_restarted_and_answers_again(stack: Stack) -> None:
    streamlit = StreamlitService(InfraConfig.from_env())
    killed = streamlit.pid()
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        program = streamlit.program()
        if (
            program
            and program.state == "RUNNING"
            and program.pid != killed
            and (streamlit.answers())
        ):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"streamlit not back within 60 s: {streamlit.program()}")
