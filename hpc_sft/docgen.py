"""Regenerate the docs that are derived from code: `python -m hpc_sft.docgen [REPO_ROOT]`."""
from __future__ import annotations

import sys
from pathlib import Path

from .spec import docs_markdown


def generated(root: Path) -> dict[Path, str]:
    """Every generated doc file and its expected content."""
    return {root / "docs" / "parameters.md": docs_markdown()}


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    for path, text in generated(root).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
