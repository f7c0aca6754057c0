"""Write one benchmark's section of docs/benchmarks.md (between its markers), keeping the others."""
from __future__ import annotations

import platform
import re
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nMeasured by the scripts in `bench/` (each rewrites its own section). "
          "Machine: the project's standard 2-core, 24 GiB Debian 12 box unless a section says otherwise.\n")


def write_section(name: str, body: str) -> None:
    """Print the section and put it into docs/benchmarks.md."""
    print(body)
    text = DOC.read_text() if DOC.is_file() else HEADER
    stamp = f"_{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, python {platform.python_version()}_"
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n\n{stamp}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"updated {DOC} [{name}]")
