"""A function run in a thread of its own, whose outcome is collected later."""

from __future__ import annotations

import threading
from collections.abc import Callable

from csvjournal._interrupts import start_thread

__all__ = ["Background"]


class Background:
    """Run ``action`` in a daemon thread named ``name`` (once started: :meth:`start`);
    :meth:`result` waits for it and returns its value or raises what it raised."""

    def __init__(self, name: str, action: Callable[[], object]) -> None:
        self._action = action
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Background:
        """Start the thread; return this. Kept by the caller first: a signal's handler
        may raise as the start ends, the thread running, and it must still be waited for."""
        start_thread(self._thread)
        return self

    def _run(self) -> None:
        try:
            self._value = self._action()
        except BaseException as exc:  # handed to whoever collects the result
            self._error = exc

    def result(self) -> object:
        """Wait for the action; return its value, or raise its exception."""
        self._join()
        if self._error is not None:
            raise self._error
        return self._value

    def wait(self) -> None:
        """Wait for the action to end, whatever its outcome (an abandoned one's)."""
        self._join()

    def _join(self) -> None:
        if self._thread.ident is not None:  # (never started: nothing to wait for)
            self._thread.join()
