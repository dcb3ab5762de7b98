"""The README's examples run and print what the README says they print: Python blocks
(``print(...)  # expected``) and shell blocks (``$ command`` lines, then their stdout)."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_the_two_commands_first() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line and line[0] != "#"]
    assert commands[0].endswith("csvjournal demo")
    assert "pytest" in commands[1]


@pytest.mark.parametrize("block", _python_blocks())
def test_python_examples_print_what_their_comments_say(
    block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _check_python(block)
    assert list(tmp_path.glob("*.csv.journal"))  # the example made a journal beside its CSV


def _check_python(block: str) -> None:
    """Run the Python ``block`` in the current folder; it prints what its comments say."""
    expected = [
        ast.literal_eval(match.group(1))
        for match in re.finditer(r"print\(.*\)\s+# ([\[{].*)$", block, re.M)
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    printed = [ast.literal_eval(line) for line in out.getvalue().splitlines() if line[:1] in "[{"]
    assert printed[: len(expected)] == expected


def _console_blocks() -> list[str]:
    return re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def _steps(block: str) -> list[tuple[str, list[str]]]:
    """The block's ``$ command`` lines, each with the stdout lines shown after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


@pytest.mark.parametrize("block", _console_blocks())
def test_shell_examples_print_what_the_readme_shows(block: str, tmp_path: Path) -> None:
    _check_console(block, tmp_path)


def _check_console(block: str, folder: Path) -> None:
    """Run the ``$`` lines of ``block`` in ``folder``; each prints what the README shows."""
    # The installed console script comes first on PATH, as after the README's install.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "LC_ALL": "C.UTF-8"}
    for command, shown in _steps(block):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.stdout.splitlines() == shown, (command, done.stderr)


def test_the_examples_run_one_after_another_in_one_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as a reader trying them in one folder would: no example trips over another's files
    monkeypatch.chdir(tmp_path)
    text = README.read_text(encoding="utf-8")
    for kind, block in re.findall(r"```(python|console)\n(.*?)```", text, re.S):
        if kind == "python":
            _check_python(block)
        else:
            _check_console(block, tmp_path)


def _json_documents() -> dict[str, str]:
    """The README's table of ``--json`` documents: command -> its documented shape."""
    found = re.findall(
        r"^\| `(\w+) --json`[^|]* \| `(.*)`", README.read_text(encoding="utf-8"), re.M
    )
    return dict(found)


def _top_level_keys(shape: str) -> set[str]:
    """The quoted names at the outer level of a documented shape like ``{"a", "b": [...]}``."""
    keys, depth = set(), 0
    for token in re.finditer(r'[{}\[\]]|"(\w+)"', shape):
        if token.group(1) is not None:
            keys |= {token.group(1)} if depth == 1 else set()
        else:
            depth += 1 if token.group(0) in "{[" else -1
    return keys


def test_the_json_documents_are_as_the_readme_says(tmp_path: Path) -> None:
    from click.testing import CliRunner

    import csvjournal
    from csvjournal.cli import cli

    csv = tmp_path / "jobs.csv"
    csv.write_text("ID\na\nb\n")
    with csvjournal.open(csv, key="ID") as journal:
        journal.record("a", "COMPLETED", NOTE="x")
    documented = _json_documents()
    assert set(documented) == {"status", "pending", "history", "backups", "recover", "import"}
    more = {"history": ["a"], "import": ["--merge"]}
    for command, shape in documented.items():
        args = [command, str(csv), *more.get(command, []), "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert set(data) == _top_level_keys(shape), command
