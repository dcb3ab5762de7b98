"""Where POSIX file locks are missing (Windows), importing csvjournal says why."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_without_fcntl_the_import_names_what_is_missing() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["fcntl"] = None  # what an import finds on Windows: no such module
        try:
            import csvjournal
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "needs a POSIX system" in done.stdout
