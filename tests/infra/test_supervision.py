"""supervisord keeps the stack's long-running processes up without a hand on them."""

from __future__ import annotations

import os
import signal
import time

import pytest

from infra.__main__ import SERVICE_CLASSES
from infra.config import InfraConfig
from infra.streamlit import StreamlitService
from tests.conftest import Stack, infra_cli

pytestmark = pytest.mark.integration


def test_every_service_of_the_stack_runs_under_supervisord(stack: Stack) -> None:
    status = infra_cli("status")
    # Only the stack's services: after a demo, its pipeline steps are listed too, without a port.
    names = {cls.name for cls in SERVICE_CLASSES}
    rows = [line.split() for line in status.stdout.splitlines()[1:]]
    supervisord_state = {row[0]: row[3] for row in rows if row and row[0] in names}
    assert supervisord_state == dict.fromkeys(names, "RUNNING"), status.stdout


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
