"""File-level helpers for `corpus build`: read a file safely, and turn the kinds of text a Debian system ships
(gettext catalogs, troff manual pages, Python sources) into plain documents. Every function here returns None or
an empty result for a file it cannot use, and says why through `Skips`; none raises on bad files."""

from __future__ import annotations

import ast
import gzip
import os
import re
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

__all__ = ["Skips", "code_language", "docstrings", "mo_pairs", "read_text", "troff_to_text", "walk_files"]

Skips = Counter
"""Reasons files were skipped (`too_large`, `unreadable`, `binary`, `not_utf8`, `symlink`, ...), counted."""


def walk_files(root: Path, skips: Skips) -> Iterator[Path]:
    """Regular files under `root`, in sorted (deterministic) order; permission errors are counted, not raised.
    Symlinks are skipped (they duplicate content and can loop)."""
    def onerror(_e: OSError) -> None:
        skips["unreadable_dir"] += 1

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink():
                skips["symlink"] += 1
            elif p.is_file():
                yield p


def read_text(path: Path, max_bytes: int, skips: Skips) -> str | None:
    """The file's text (gunzipped if `.gz`), or None if it is too large, unreadable, binary or not UTF-8."""
    try:
        if path.stat().st_size > max_bytes:
            skips["too_large"] += 1
            return None
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read(max_bytes + 1)
            if len(data) > max_bytes:
                skips["too_large"] += 1
                return None
        else:
            data = path.read_bytes()
    except (OSError, EOFError):
        skips["unreadable"] += 1
        return None
    if b"\0" in data:
        skips["binary"] += 1
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        skips["not_utf8"] += 1
        return None


def mo_pairs(path: Path, skips: Skips, max_bytes: int = 4 << 20) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled gettext catalog (GNU .mo format), header and plural forms left out."""
    try:
        if path.stat().st_size > max_bytes:
            skips["too_large"] += 1
            return []
        data = path.read_bytes()
        magic = struct.unpack_from("<I", data)[0]
        end = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
        if end is None:
            skips["bad_mo"] += 1
            return []
        _rev, n, orig_off, trans_off = struct.unpack_from(end + "4I", data, 4)
        pairs = []
        for i in range(n):
            olen, opos = struct.unpack_from(end + "2I", data, orig_off + 8 * i)
            tlen, tpos = struct.unpack_from(end + "2I", data, trans_off + 8 * i)
            msgid, msgstr = data[opos : opos + olen], data[tpos : tpos + tlen]
            if not msgid or b"\0" in msgid or b"\x04" in msgid:  # header, plural forms, msgctxt
                continue
            pairs.append((msgid.decode("utf-8"), msgstr.decode("utf-8")))
        return pairs
    except (OSError, struct.error, UnicodeDecodeError):
        skips["bad_mo"] += 1
        return []


_TROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes \fB \fI \fR \f(CW \f[B]
    (re.compile(r"\\s[+-]?\d"), ""),  # size changes
    (re.compile(r"\\\((em|en)"), "\u2014"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((aq|oq|cq)"), "'"),
    (re.compile(r"\\\(bu"), "\u2022"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]|\\\*\(..|\\\*."), ""),  # other special characters and strings
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&/,:|^%]"), ""),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\ "), " "),
]
_TEXT_MACROS = {"B", "I", "BR", "BI", "IB", "RB", "IR", "RI", "SH", "SS", "SM", "SB", "IP", "TP", "Nm", "Nd", "Sh"}


def troff_to_text(src: str) -> str | None:
    """Plain text of a manual page (man macros); None for a `.so` redirect or an empty page."""
    out = []
    for line in src.splitlines():
        if line.startswith((".so ", "'so ")):
            return None
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro not in _TEXT_MACROS or not rest:
                if macro in ("PP", "LP", "P", "SH", "SS", "TP", "IP", "sp", "br"):
                    out.append("")
                continue
            line = rest.replace('"', "")
        for pattern, repl in _TROFF_ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line.replace("\\", ""))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    return text or None


def docstrings(source: str) -> str | None:
    """Module, class and function docstrings of a Python source, as prose paragraphs."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return None
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if doc and len(doc) > 40:
                parts.append(doc)
    return "\n\n".join(parts) or None


_EXT_LANG = {
    ".py": "python", ".h": "c", ".c": "c", ".hpp": "cpp", ".cc": "cpp", ".cpp": "cpp", ".sh": "shell",
    ".bash": "shell", ".pl": "perl", ".pm": "perl", ".rb": "ruby", ".lua": "lua", ".tcl": "tcl", ".el": "elisp",
    ".js": "javascript", ".awk": "awk", ".cmake": "cmake", ".m4": "m4", ".mk": "make", ".sed": "sed",
    ".go": "go", ".rs": "rust", ".java": "java", ".scm": "scheme", ".vim": "vim",
}
_SHEBANG_LANG = {"sh": "shell", "bash": "shell", "dash": "shell", "zsh": "shell", "perl": "perl",
                 "python3": "python", "python": "python", "ruby": "ruby", "awk": "awk", "sed": "sed", "tclsh": "tcl"}


def code_language(path: Path, head: bytes) -> str | None:
    """Programming language from the file name or a `#!` line, else None."""
    if path.name in ("Makefile", "GNUmakefile"):
        return "make"
    if path.name == "CMakeLists.txt":
        return "cmake"
    lang = _EXT_LANG.get(path.suffix)
    if lang:
        return lang
    if head.startswith(b"#!"):
        words = head[2:].split(b"\n", 1)[0].decode("latin-1").split()
        if words:
            prog = os.path.basename(words[1] if words[0].endswith("/env") and len(words) > 1 else words[0])
            return _SHEBANG_LANG.get(re.sub(r"[\d.]+$", "", prog)) or _SHEBANG_LANG.get(prog)
    return None
