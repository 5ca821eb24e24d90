"""The MultiPL-E languages as data: how a program of each is written to disk, built and run, which tools that
needs and which Debian package provides them, and Nemotron-4 15B's published score (report Table 6, pass@1).

The build and run commands and the rules for success follow MultiPL-E's own evaluation scripts
(`evaluation/src/eval_<lang>.py` in nuprl/MultiPL-E): a program passes when every command exits 0 within the time
limit; C# also fails when the runtime reports a failed `Debug.Assert` or an unhandled exception (mono exits 0 on
those), and Scala also fails when the run writes to stderr. Julia is not packaged by Debian: install it from
julialang.org and put `julia` on PATH.

Run as a script (stdlib only, no torch), this prints the Debian packages of every language that has one:
`python3 nemotron4/eval/languages.py` (what `make toolchains` installs).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

__all__ = ["LANGUAGES", "Language", "debian_packages", "missing_toolchains", "resolve"]

JAVATUPLES = "/usr/share/java/javatuples.jar"  # MultiPL-E's Java prompts import org.javatuples.*
# Few JVM threads (the serial collector, one JIT thread), no /tmp/hsperfdata file, a bounded heap.
_JVM = ("-Xmx1g", "-Xss8m", "-XX:+UseSerialGC", "-XX:CICompilerCount=2", "-XX:-UsePerfData")
_GIB = 1 << 30


@dataclass(frozen=True)
class Language:
    code: str
    """MultiPL-E's language key (the problems' `language` field and file names: humaneval-<code>)."""
    name: str
    suffix: str
    """File name suffix of the program (it is written as Problem<suffix>)."""
    run: tuple[str, ...]
    build: tuple[str, ...] = ()
    """Build command, if the language has one; a failure is a compile error."""
    tools: tuple[str, ...] = ()
    """Executables that must be on PATH."""
    packages: tuple[str, ...] = ()
    """Debian packages providing the tools (and libraries the problems use); empty: not in Debian."""
    files: tuple[str, ...] = ()
    """Other files the programs need (libraries), checked beside the tools."""
    paper: float | None = None
    """Nemotron-4 15B, MultiPL-E pass@1 (percent)."""
    env: tuple[tuple[str, str], ...] = ()
    memory_bytes: int | None = None
    """Address-space limit when the default (2 GiB) is too small: JVMs and mono reserve far more than they use."""
    max_processes: int | None = None
    """Process/thread limit when the runtime starts many threads."""
    build_timeout_s: float = 60.0
    fail_markers: tuple[str, ...] = ()
    """Text in stderr that makes an exit-0 run a failure."""
    stderr_fails: bool = False
    """Any stderr output makes an exit-0 run a failure."""

    @property
    def source(self) -> str:
        return f"Problem{self.suffix}"


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("cpp", "C++", ".cpp", ("./Problem",), ("g++", "-std=c++17", "-o", "Problem", "Problem.cpp"),
             ("g++",), ("g++",), paper=35.4),
    Language("java", "Java", ".java", ("java", *_JVM, "-ea", "-cp", f".:{JAVATUPLES}", "Problem"),
             ("javac", "-J-Xmx1g", "-J-XX:+UseSerialGC", "-J-XX:-UsePerfData", "-encoding", "UTF8",
              "-cp", JAVATUPLES, "-d", ".", "Problem.java"),
             ("javac", "java"), ("openjdk-17-jdk-headless", "libjavatuples-java"), (JAVATUPLES,), paper=24.8,
             memory_bytes=8 * _GIB, max_processes=256),
    Language("js", "JavaScript", ".js", ("node", "Problem.js"), tools=("node",), packages=("nodejs",), paper=28.6,
             memory_bytes=8 * _GIB, max_processes=64),
    Language("ts", "TypeScript", ".ts", ("node", "Problem.js"), ("tsc", "--target", "esnext", "Problem.ts"),
             ("tsc", "node"), ("node-typescript", "nodejs"), paper=32.9, memory_bytes=8 * _GIB, max_processes=64),
    Language("php", "PHP", ".php", ("php", "Problem.php"), tools=("php",), packages=("php-cli",), paper=27.3),
    Language("sh", "Shell", ".sh", ("bash", "Problem.sh"), tools=("bash",), packages=("bash",), paper=8.9),
    Language("r", "R", ".r", ("Rscript", "Problem.r"), tools=("Rscript",), packages=("r-base-core",), paper=18.6),
    Language("lua", "Lua", ".lua", ("lua", "Problem.lua"), tools=("lua",), packages=("lua5.4", "lua-unit"),
             paper=24.2),
    Language("cs", "C#", ".cs", ("mono", "Problem.exe"),
             ("mcs", "-d:DEBUG", "-r:System.Numerics.dll", "-out:Problem.exe", "Problem.cs"),
             ("mcs", "mono"), ("mono-mcs", "mono-runtime"), paper=21.1,
             env=(("MONO_TRACE_LISTENER", "Console.Error"),), memory_bytes=8 * _GIB, max_processes=64,
             fail_markers=("System.Diagnostics.DefaultTraceListener.Fail", "Unhandled Exception")),
    Language("scala", "Scala", ".scala", ("scala", "-nc", "-cp", ".", "Problem"),
             ("scalac", "-d", ".", "Problem.scala"),
             ("scalac", "scala"), ("scala",), paper=27.3, env=(("JAVA_OPTS", " ".join(_JVM)),),
             memory_bytes=8 * _GIB, max_processes=256, build_timeout_s=120.0, stderr_fails=True),
    Language("jl", "Julia", ".jl", ("julia", "Problem.jl"), tools=("julia",), paper=24.8, memory_bytes=8 * _GIB,
             max_processes=64),
)}

PAPER_AVERAGE = 24.5  # the average Table 6 prints; its eleven per-language numbers average 24.9


def resolve(names: list[str] | None) -> list[Language]:
    """Languages by MultiPL-E code (all eleven when `names` is empty or None); ValueError names unknown ones."""
    if not names:
        return list(LANGUAGES.values())
    unknown = [n for n in names if n not in LANGUAGES]
    if unknown:
        raise ValueError(f"unknown MultiPL-E languages {', '.join(unknown)} (choose from {', '.join(LANGUAGES)})")
    return [LANGUAGES[n] for n in dict.fromkeys(names)]


def missing_toolchains(languages: list[Language]) -> dict[str, str]:
    """language code -> what is missing and how to get it, for each language whose tools are not installed."""
    out = {}
    for lang in languages:
        missing = [t for t in lang.tools if shutil.which(t) is None]
        missing += [f for f in lang.files if not os.path.exists(f)]
        if missing:
            how = (f"apt-get install {' '.join(lang.packages)} (or `make toolchains`)" if lang.packages
                   else "not packaged by Debian: install it from its project site and put it on PATH")
            out[lang.code] = f"{lang.name}: {', '.join(missing)} not found; {how}"
    return out


def debian_packages() -> list[str]:
    """Every Debian package the languages need, once each, in language order."""
    return list(dict.fromkeys(p for lang in LANGUAGES.values() for p in lang.packages))


if __name__ == "__main__":
    print(" ".join(debian_packages()))
