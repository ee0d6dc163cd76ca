"""`python -m schemas write|check [--dir DIR]`: keep the JSON Schema files true to the code.

`write` regenerates `schemas/json/*.json`; `check` exits 1 and lists every file
that is missing, differs or is unexpected (for CI and pre-commit).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas.registry import EVENT_TYPES, SCHEMA_DIR, check_schema_files, write_schema_files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas",
        description="Generate or check the JSON Schema files of the event contracts.",
    )
    parser.add_argument("command", choices=("write", "check"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=SCHEMA_DIR,
        help=f"directory of the schema files (default: {SCHEMA_DIR})",
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir

    if args.command == "write":
        changed = write_schema_files(directory)
        for path in changed:
            print(f"wrote {path}")
        print(f"{len(EVENT_TYPES)} schema files in {directory}, {len(changed)} changed")
        return 0

    drift = check_schema_files(directory)
    if drift:
        for line in drift:
            print(line, file=sys.stderr)
        print(
            f"{len(drift)} schema file(s) out of date; run: python -m schemas write",
            file=sys.stderr,
        )
        return 1
    print(f"{len(EVENT_TYPES)} schema files in {directory} match the code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
