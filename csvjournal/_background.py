"""A function run in a thread of its own, whose outcome is collected later."""

from __future__ import annotations

import threading
from collections.abc import Callable

from csvjournal._interrupts import start_thread

__all__ = ["Background"]


class Background:
    """Run ``action`` in a daemon thread named ``name`` at once; :meth:`result` waits for
    it and returns its value or raises what it raised."""

    def __init__(self, name: str, action: Callable[[], object]) -> None:
        self._action = action
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        start_thread(self._thread)

    def _run(self) -> None:
        try:
            self._value = self._action()
        except BaseException as exc:  # handed to whoever collects the result
            self._error = exc

    def result(self) -> object:
        """Wait for the action; return its value, or raise its exception."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        """Wait for the action to end, whatever its outcome (an abandoned one's)."""
        self._thread.join()
