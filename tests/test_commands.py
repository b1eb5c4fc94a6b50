"""Every command the documentation and the programs tell a user to run exists in a fresh clone.

Commands are taken from the README files and docs/ (code blocks and `code spans`) and from the
string literals of the packages (what the CLIs print, their usage docstrings). Each
``python -m MODULE [SUBCOMMAND] [--FLAG ...]`` must answer ``--help`` with exit status 0, name
the subcommand among its choices and list every flag; each ``make TARGET`` must be a target
(``make -n``). The values of flags and arguments are not checked, only that they are accepted.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import InfraConfig
from infra.demo import live_note, summary_text
from schemas.settings import CassandraSettings
from tests.conftest import REPO_ROOT

DOCS = sorted(
    [REPO_ROOT / "README.md", *REPO_ROOT.glob("*/README.md"), *REPO_ROOT.glob("docs/*.md")]
)
PACKAGES = ("collector", "stream_processor", "gbm_analysis", "dashboards", "schemas", "infra")

# `python -m module` (or `python benchmarks/x.py`) and its arguments, up to a comment, a quote,
# a backtick or a shell operator.
_PYTHON_M = re.compile(
    r"python (?:-m ([A-Za-z_][\w.]*)|(benchmarks/\w+\.py))((?:[ \t]+(?!#)[^\s`'\"|;&()]+)*)"
)
# Files a command names (spark-submit's job files, scripts) and tools `make install` puts in .venv.
_FOLDERS = "|".join((*PACKAGES, "benchmarks"))
_PATH = re.compile(rf"(?<![\w./-])((?:{_FOLDERS})/[\w/]+\.py)\b")
_VENV_TOOL = re.compile(r"\.venv/bin/([A-Za-z][\w.-]*)")
# `make target` where a command starts (not "make sure" in a sentence: only in code).
_MAKE = re.compile(r"(?:^|[\s(`])make ([a-z][\w-]*)")
# An alternative subcommand in a code span: `python -m gbm_analysis run --once | backtest`.
_ALTERNATIVE = re.compile(r"\s\|\s+([a-z][\w-]*(?:[ \t]+[^\s`'\"|;&()]+)*)")


def _markdown_code(text: str) -> Iterator[tuple[str, bool]]:
    """(code, is_inline) of every fenced block (continuation lines joined) and code span."""
    fence = re.compile(r"```[\w-]*\n(.*?)```", re.S)
    for block in fence.findall(text):
        yield re.sub(r"\\\n\s*", " ", block), False
    # A code span may wrap onto the next line, not past a paragraph.
    for span in re.findall(r"`((?:[^`\n]|\n(?!\s*\n))+)`", fence.sub("", text)):
        yield " ".join(span.split()), True


def _literal_strings(path: Path) -> Iterator[str]:
    """Every string literal of a module; an f-string's fields read as ``X``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            yield "".join(
                part.value if isinstance(part, ast.Constant) else "X" for part in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _commands(code: str, inline: bool) -> Iterator[tuple[str, list[str]]]:
    """``(module, arguments)`` per ``python -m`` command, and ``("make", [target])``."""
    for match in _PYTHON_M.finditer(code):
        module, arguments = match.group(1) or match.group(2), match.group(3).split()
        yield module, arguments
        if inline:  # `python -m m a --x | b | c`: b and c are alternatives to a
            rest = code[match.end() :]
            while alternative := _ALTERNATIVE.match(rest):
                yield module, alternative.group(1).split()
                rest = rest[alternative.end() :]
    for match in _MAKE.finditer(code):
        yield "make", [match.group(1)]


def _sources() -> Iterator[tuple[str, str, bool]]:
    """``(where, code, is_inline)`` of every place a command may be written."""
    for doc in DOCS:
        for code, inline in _markdown_code(doc.read_text(encoding="utf-8")):
            yield str(doc.relative_to(REPO_ROOT)), code, inline
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for text in _literal_strings(path):
                if "python -m" in text or "make " in text:
                    # In program text only `make x` in backticks is a command ("make sure").
                    for code in [text] if "python -m" in text else re.findall(r"`([^`]+)`", text):
                        yield str(path.relative_to(REPO_ROOT)), code, True


def _flags(arguments: list[str]) -> list[str]:
    return [a.strip("[]").split("=")[0] for a in arguments if a.strip("[").startswith("--")]


def _collect() -> tuple[dict[tuple[str, str], dict[str, set[str]]], dict[str, set[str]]]:
    """(module, first positional argument or "") -> flag -> where; make target -> where."""
    modules: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    targets: dict[str, set[str]] = defaultdict(set)
    for where, code, inline in _sources():
        for path in _PATH.findall(code):
            FILES[path].add(where)
        for tool in _VENV_TOOL.findall(code):
            TOOLS[tool].add(where)
        for module, arguments in _commands(code, inline):
            if module == "make":
                targets[arguments[0]].add(where)
                continue
            positional = next((a for a in arguments if not a.startswith(("-", "["))), "")
            if arguments and arguments[0].startswith("-"):
                positional = ""  # flags first: no subcommand
            flags = modules[(module, positional)]
            flags[""].add(where)  # the command itself
            for flag in _flags(arguments):
                flags[flag].add(where)
    return modules, targets


FILES: dict[str, set[str]] = defaultdict(set)
TOOLS: dict[str, set[str]] = defaultdict(set)
MODULES, TARGETS = _collect()


def _help(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    run = [module] if module.endswith(".py") else ["-m", module]
    return subprocess.run(
        [sys.executable, *run, *argv, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _subcommands(usage: str) -> set[str]:
    """argparse's ``{a,b,c}`` subcommand choices in a help text."""
    found = re.search(r"\{([\w,-]+)\}", usage)
    return set(found.group(1).split(",")) if found else set()


def test_the_documents_and_programs_name_commands() -> None:
    # The extraction itself: a change of format that hides every command fails here.
    assert {"collector", "collector.feed", "infra", "gbm_analysis", "stream_processor"} <= {
        module for module, _ in MODULES
    }
    assert {"demo", "test", "up", "down", "status"} <= set(TARGETS)


@pytest.mark.parametrize(("module", "positional"), sorted(MODULES), ids=lambda v: v or "-")
def test_each_python_m_command_exists_with_its_flags(module: str, positional: str) -> None:
    seen = MODULES[(module, positional)]
    where = ", ".join(sorted(set().union(*seen.values())))
    top = _help(module)
    assert top.returncode == 0, f"python -m {module} --help ({where}):\n{top.stderr}"
    helped = top
    choices = _subcommands(top.stdout)
    if choices and positional:
        assert positional in choices, (
            f"python -m {module} {positional} ({where}): no such subcommand; "
            f"there are {', '.join(sorted(choices))}"
        )
        helped = _help(module, positional)
        assert helped.returncode == 0, helped.stderr
    for flag, places in seen.items():
        if flag:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helped.stdout), (
                f"python -m {module} {positional} {flag} ({', '.join(sorted(places))}): "
                "no such option"
            )


def test_every_file_and_venv_tool_a_command_names_exists() -> None:
    missing = [
        f"{path} ({', '.join(sorted(FILES[path]))})"
        for path in sorted(FILES)
        if not (REPO_ROOT / path).is_file()
    ]
    # What `make install` puts into .venv/bin from pyproject.toml's dependencies.
    missing += [
        f".venv/bin/{tool} ({', '.join(sorted(TOOLS[tool]))})"
        for tool in sorted(TOOLS)
        if not (Path(sys.executable).parent / tool).exists()
    ]
    assert not missing, "named but not there:\n" + "\n".join(missing)
    assert "stream_processor/rebuild.py" in FILES and "spark-submit" in TOOLS


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_make_target_exists(target: str) -> None:
    result = subprocess.run(
        ["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"make {target} ({', '.join(sorted(TARGETS[target]))}):\n" + (
        result.stderr
    )


def test_the_demo_summary_suggests_only_what_a_fresh_clone_has() -> None:
    config = InfraConfig.from_env({})
    cassandra = CassandraSettings.from_env({})
    text = summary_text(
        config,
        cassandra,
        {"trades": 10, "dlq": 1},
        {"trades": 10, "trades_agg_1m": 2},
        {"trades": 10, "trades_agg_1m": 2},
    ) + live_note(config, "1h")
    # A command line: a lower-case program name, then an option. (The commands themselves
    # are checked above, with every other string of infra/demo.py.)
    programs = re.findall(r"^\s*([a-z][\w./-]*) +--?[a-z]", text, re.M)
    assert programs, text
    assert set(programs) <= {"python", "make"}, text
