"""The table of docs/reliability.md, from the JSON lines a chaos run appended to the file named by
``STREAMREC_CHAOS_REPORT``: ``python -m tests.chaos.report FILE``."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.chaos.accounting import Accounting, table


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} REPORT.jsonl", file=sys.stderr)
        return 2
    lines = Path(argv[1]).read_text(encoding="utf-8").splitlines()
    print(table(Accounting.from_json(line) for line in lines if line.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
