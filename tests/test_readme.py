"""The README's Python example runs and prints what the README says it prints."""

from __future__ import annotations

import ast
import contextlib
import io
import re
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
    expected = [
        ast.literal_eval(match.group(1))
        for match in re.finditer(r"print\(.*\)\s+# ([\[{].*)$", block, re.M)
    ]
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    printed = [ast.literal_eval(line) for line in out.getvalue().splitlines() if line[:1] in "[{"]
    assert printed[: len(expected)] == expected
    assert list(tmp_path.glob("*.csv.journal"))  # the example made a journal beside its CSV
