"""The command line as click will read it: which words give which options (before click
parses it, which keeps the last value of an option given twice); path arguments."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = ["PathArgument", "refuse_repeated"]


class PathArgument(click.Path):
    """A path argument or option, given as a :class:`~pathlib.Path`; an empty one (an
    unset shell variable, say) is refused, not taken for the current folder."""

    def __init__(self, *, file_okay: bool = True, dir_okay: bool = True) -> None:
        super().__init__(file_okay=file_okay, dir_okay=dir_okay, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            self.fail("an empty name (an unset variable?)", param, ctx)
        if not self.dir_okay and isinstance(value, str) and value.endswith(os.sep):
            self.fail(
                f"{value!r} ends in {os.sep}: a folder's name, where a file's is wanted", param, ctx
            )
        return super().convert(value, param, ctx)


def refuse_repeated(command: click.Command, ctx: click.Context, args: list[str]) -> None:
    """Refuse an option of one value given twice (click keeps the last): ``record
    --status A --status B`` must not record B, as ``FIELD=a FIELD=b`` is refused.

    Raises:
        click.UsageError: the option, and the words that gave it.
    """
    given: dict[str, list[str]] = {}
    for param, word in _options_given(command, args):
        if not param.multiple and not param.is_flag:
            given.setdefault(max(param.opts, key=len), []).append(word)
    for name, words in given.items():
        if len(words) > 1:
            raise click.UsageError(f"option {name} given twice ({' and '.join(words)})", ctx=ctx)


def _options_given(command: click.Command, args: list[str]) -> Iterator[tuple[click.Option, str]]:
    """Each option of ``command`` in the command line ``args``, with the words giving it, as
    click reads them: the word after an option that takes a value is that value (even
    ``-j`` or ``--status``), and nothing after ``--`` is an option."""
    options = {
        name: param
        for param in command.params
        if isinstance(param, click.Option)
        for name in param.opts + param.secondary_opts
    }
    words = iter(args)
    for word in words:
        if word == "--":
            return
        name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
        param = options.get(name) if word.startswith("-") else None
        if param is None:
            continue
        given = word
        if not param.is_flag and not param.count and word == name:  # its value: the next word
            value = next(words, None)
            given = word if value is None else shlex.join([word, value])
        yield param, given
