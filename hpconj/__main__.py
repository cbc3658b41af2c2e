"""`python -m hpconj` is the same as the `hpconj` command."""
from __future__ import annotations

from hpconj.cli import main

if __name__ == "__main__":
    main()
