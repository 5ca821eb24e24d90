"""The shell examples of README.md, as the commands a user would type (continuation lines joined)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def bash_blocks(text: str | None = None) -> list[tuple[str, list[str]]]:
    """(the heading above it, its commands) for every ```bash block of the README."""
    text = README.read_text() if text is None else text
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```", text, flags=re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
            continue
        joined = m.group(2).replace("\\\n", " ")
        cmds = [ln.split("  #")[0].strip() for ln in joined.splitlines()]
        out.append((heading, [c for c in cmds if c and not c.startswith("#")]))
    return out


def block(heading: str) -> list[str]:
    """The commands of the first bash block under `heading`."""
    for h, cmds in bash_blocks():
        if h == heading:
            return cmds
    raise KeyError(heading)


def argv(command: str) -> list[str]:
    return shlex.split(command)
