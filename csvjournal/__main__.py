"""``python -m csvjournal``: the command line."""

from __future__ import annotations

from csvjournal._entry import main

if __name__ == "__main__":
    main()
