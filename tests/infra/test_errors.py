"""Infra's errors stay inside its exception tree: what Trino refuses is a TrinoQueryError, which
the CLI prints as one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from infra.__main__ import main
from infra.errors import InfraError, TrinoQueryError
from infra.trino import run_query
from tests.conftest import serving

MESSAGE = "line 1:15: Schema 'nope' does not exist"


class RefusingTrino(BaseHTTPRequestHandler):
    """Answers every statement the way Trino answers a failed query."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"id": "q1", "error": {"message": MESSAGE}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def trino_port() -> Iterator[int]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), RefusingTrino)) as server:
        yield server.server_address[1]


def test_a_refused_query_is_a_trino_query_error_in_the_infra_tree(trino_port: int) -> None:
    with pytest.raises(TrinoQueryError, match="Schema 'nope' does not exist") as caught:
        run_query(trino_port, "SELECT * FROM nope.t", timeout=5)
    assert isinstance(caught.value, InfraError)


def test_infra_sql_prints_trinos_message_in_one_line(
    trino_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRINO_PORT", str(trino_port))
    assert main(["sql", "SELECT * FROM nope.t"]) == 1
    assert capsys.readouterr().err == f"infra: error: trino: {MESSAGE}\n"


def test_report_prints_one_line_and_returns_the_exit_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from infra.errors import JavaNotFoundError, ServiceStartError, report
    from schemas.settings import SettingsError

    assert report(ServiceStartError("kafka did not start", "last line of its log")) == 1
    assert capsys.readouterr().err == "infra: error: kafka did not start\nlast line of its log\n"
    assert report(JavaNotFoundError("no Java 17")) == 3
    assert report(SettingsError("KAFKA_HEAP='lots': expected a size")) == 2
    assert capsys.readouterr().err.splitlines() == [
        "infra: error: no Java 17",
        "infra: error: KAFKA_HEAP='lots': expected a size",
    ]
