"""Worker-name tags: what sets apart the default worker names of the handles of one journal
open in one process."""

from __future__ import annotations

import os
import threading
from itertools import count
from pathlib import Path

__all__ = ["give_tag", "take_tag"]

# Per process and journal, the tags of its open handles (see take_tag): a forked child's
# own start with no tag, whatever handles it inherited (they take theirs anew if used).
_tags: dict[tuple[int, Path], set[str]] = {}
_tags_lock = threading.Lock()


def take_tag(journal: Path) -> str:
    """What sets the default worker names of a new handle apart from those of the other
    handles of ``journal`` open in this process: nothing for the first, then ``#2``... A
    claim belongs to its worker name: two handles used from one thread must not share one,
    or one would renew and give back rows the other took over."""
    with _tags_lock:
        taken = _tags.setdefault((os.getpid(), journal.resolve()), set())
        tag = next(t for n in count(1) if (t := "" if n == 1 else f"#{n}") not in taken)
        taken.add(tag)
        return tag


def give_tag(journal: Path, tag: str) -> None:
    """Free ``tag`` (from :func:`take_tag`) once its handle is closed."""
    with _tags_lock:
        _tags.get((os.getpid(), journal.resolve()), set()).discard(tag)
