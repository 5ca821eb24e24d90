"""Hand-written problems in MultiPL-E's format (the fields and layout of its humaneval-<lang>-reworded.jsonl files:
the prompt ends where the body starts, `tests` closes what the prompt opened where MultiPL-E's do, the stop tokens
are MultiPL-E's for that language), one per language: HumanEval/53 `add`. For each, completions that must pass,
fail, fail to compile, loop, fork without end and write outside the scratch directory ({path} is filled in)."""

from __future__ import annotations

CPP_HEAD = "#include<assert.h>\n#include<bits/stdc++.h>\n"
JAVA_HEAD = ("import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\nimport java.security.*;\n"
             "import java.math.*;\nimport java.io.*;\nimport java.util.stream.*;\n")
CS_HEAD = ("using System;\nusing System.Numerics;\nusing System.Diagnostics;\nusing System.Collections.Generic;\n"
           "using System.Linq;\nusing System.Text;\nusing System.Security.Cryptography;\n")
JS_TESTS = ("const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = add;\n"
            "  assert.deepEqual(candidate(0, 1),1);\n  assert.deepEqual(candidate(2, 3),5);\n"
            "  assert.deepEqual(candidate(7, 5),12);\n}\n\ntest();")
JS_BOMB = ("  const cp = require('child_process');\n"
           "  while (true) { try { cp.spawn('sleep', ['100']); } catch (e) {} }\n}")

PROBLEMS: dict[str, dict] = {
    "cpp": {
        "prompt": CPP_HEAD + "// Add two numbers x and y\n// >>> add((2), (3))\n// (5)\nlong add(long x, long y) {\n",
        "tests": "}\nint main() {\n    auto candidate = add;\n    assert(candidate((0), (1)) == (1));\n"
                 "    assert(candidate((2), (3)) == (5));\n    assert(candidate((7), (5)) == (12));\n}\n",
        "stop_tokens": ["\n}"],
        "correct": "    return x + y;",
        "wrong": "    return x - y;",
        "compile_error": "    return x + ;",
        "loop": "    volatile long z = 0;\n    while (true) { z++; }",
        "fork_bomb": "    return x + y;\n}\n#include <unistd.h>\n"
                     "static int bomb = [] { while (true) fork(); return 0; }();\n"
                     "long unused(long x) {\n    return x;",
        "write_outside": '    std::ofstream("{path}") << "x";\n    return x + y;',
    },
    "java": {
        "prompt": JAVA_HEAD + "class Problem {\n    // Add two numbers x and y\n    // >>> add((2l), (3l))\n"
                  "    // (5l)\n"
                  "    public static long add(long x, long y) {\n",
        "tests": "    }\n    public static void main(String[] args) {\n    assert(add((0l), (1l)) == (1l));\n"
                 "    assert(add((2l), (3l)) == (5l));\n    assert(add((7l), (5l)) == (12l));\n    }\n\n}\n",
        "stop_tokens": ["\n    }\n"],
        "correct": "        return x + y;",
        "wrong": "        return x - y;",
        "compile_error": "        return x + ;",
        "loop": "        while (true) {}",
        "fork_bomb": '        while (true) { try { new ProcessBuilder("sleep", "100").start(); } '
                     "catch (Exception e) { } }",
        "write_outside": '        try { java.nio.file.Files.writeString(java.nio.file.Path.of("{path}"), "x"); }\n'
                         "        catch (IOException e) { }\n        return x + y;",
    },
    "js": {
        "prompt": "//Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add(x, y){\n",
        "tests": JS_TESTS,
        "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nconsole.log"],
        "correct": "  return x + y;\n}",
        "wrong": "  return x - y;\n}",
        "compile_error": "  return x + ;\n}",
        "loop": "  while (true) {}\n}",
        "fork_bomb": JS_BOMB,
        "write_outside": "  require('fs').writeFileSync('{path}', 'x');\n  return x + y;\n}",
    },
    "ts": {
        "prompt": "//Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add(x: number, y: number): number {\n",
        "tests": "declare var require: any;\n" + JS_TESTS,
        "stop_tokens": ["\nfunction ", "\n/*", "\n//", "\nclass"],
        "correct": "  return x + y;\n}",
        "wrong": "  return x - y;\n}",
        "compile_error": "  return 'not a number';\n}",  # a type error: tsc refuses it
        "loop": "  while (true) {}\n}",
        "fork_bomb": JS_BOMB,
        "write_outside": "  require('fs').writeFileSync('{path}', 'x');\n  return x + y;\n}",
    },
    "php": {
        "prompt": "<?php\n// Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add($x, $y) {\n",
        "tests": "function candidate(...$args) {\n    return add(...$args);\n}\n\nfunction test(): void {\n"
                 '    if (candidate(0, 1) !== 1) { throw new Exception("Test failed!"); }\n'
                 '    if (candidate(2, 3) !== 5) { throw new Exception("Test failed!"); }\n'
                 '    if (candidate(7, 5) !== 12) { throw new Exception("Test failed!"); }\n}\n\ntest();',
        "stop_tokens": ["\nfunction", "\n?>", "\n//", "\n#"],
        "correct": "    return $x + $y;\n}",
        "wrong": "    return $x - $y;\n}",
        "compile_error": "    return $x + ;\n}",
        "loop": "    while (true) {}\n}",
        "fork_bomb": "    while (true) { @exec('sleep 100 > /dev/null 2>&1 &'); }\n}",
        "write_outside": "    @file_put_contents('{path}', 'x');\n    return $x + $y;\n}",
    },
    "sh": {
        "prompt": '#!/bin/bash\n# Add two numbers x and y\n# >>> $(add "2" "3")\n# "5"\n#\n# $1 is an integer\n'
                  "# $2 is an integer\nadd() {\n",
        "tests": '}\n\ncandidate() {\n    add "$@"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate "0" "1") = "1" ]]\n'
                 '    [[ $(candidate "2" "3") = "5" ]]\n    [[ $(candidate "7" "5") = "12" ]]\n}\n\nrun_test',
        "stop_tokens": ["\n}"],
        "correct": "    echo $(( $1 + $2 ))",
        "wrong": "    echo $(( $1 - $2 ))",
        "compile_error": "    if then fi ((",
        "loop": "    while true; do :; done",
        "fork_bomb": "    bomb() { bomb | bomb & }; bomb; wait",
        "write_outside": "    echo x > '{path}'\n    echo $(( $1 + $2 ))",
    },
    "r": {
        "prompt": "# Add two numbers x and y\n# >>> add(2, 3)\n# 5\nadd <- function(x, y) {",
        "tests": "test_humaneval <- function() {\n    candidate <- add\n"
                 "    stopifnot(isTRUE(all.equal(candidate(0, 1), 1)))\n"
                 "    stopifnot(isTRUE(all.equal(candidate(2, 3), 5)))\n"
                 "    stopifnot(isTRUE(all.equal(candidate(7, 5), 12)))\n}\ntest_humaneval()",
        "stop_tokens": ["\n#", "\n```"],
        "correct": "\n    x + y\n}",
        "wrong": "\n    x - y\n}",
        "compile_error": "\n    x + \n}}",
        "loop": "\n    while (TRUE) {}\n}",
        "fork_bomb": "\n    while (TRUE) system('sleep 100', wait = FALSE)\n}",
        "write_outside": "\n    writeLines('x', '{path}')\n    x + y\n}",
    },
    "lua": {
        "prompt": "-- Add two numbers x and y\n-- >>> add(2, 3)\n-- 5\nlocal function add(x, y)\n",
        "tests": "lu = require('luaunit')\n\nfunction test_humaneval()\nlocal candidate = add\n"
                 "    lu.assertEquals(candidate(0, 1), 1)\n    lu.assertEquals(candidate(2, 3), 5)\n"
                 "    lu.assertEquals(candidate(7, 5), 12)\nend\n\nos.exit(lu.LuaUnit.run())",
        "stop_tokens": ["\nlocal", "\nfunction", "\n--", "\n\n"],
        "correct": "    return x + y\nend",
        "wrong": "    return x - y\nend",
        "compile_error": "    return x +\nend",
        "loop": "    while true do end\nend",
        "fork_bomb": "    while true do os.execute('sleep 100 &') end\nend",
        "write_outside": "    local f = io.open('{path}', 'w')\n    if f then f:write('x') f:close() end\n"
                         "    return x + y\nend",
    },
    "cs": {
        "prompt": CS_HEAD + "class Problem {\n    // Add two numbers x and y\n    // >>> Add((2L), (3L))\n    // (5L)\n"
                  "    public static long Add(long x, long y) {\n",
        "tests": "    }\n    public static void Main(string[] args) {\n    Debug.Assert(Add((0L), (1L)) == (1L));\n"
                 "    Debug.Assert(Add((2L), (3L)) == (5L));\n    Debug.Assert(Add((7L), (5L)) == (12L));\n"
                 "    }\n\n}\n",
        "stop_tokens": ["\n    }\n"],
        "correct": "        return x + y;",
        "wrong": "        return x - y;",
        "compile_error": "        return x + ;",
        "loop": "        while (true) {}",
        "fork_bomb": '        while (true) { try { Process.Start("sleep", "100"); } catch (Exception) {} }',
        "write_outside": '        try { System.IO.File.WriteAllText("{path}", "x"); } catch (Exception) {}\n'
                         "        return x + y;",
    },
    "scala": {
        "prompt": "import scala.math._\nimport scala.collection.mutable._\nobject Problem {\n"
                  "    // Add two numbers x and y\n    // >>> add((2l), (3l))\n    // (5l)\n"
                  "    def add(x : Long, y : Long) : Long = {\n",
        "tests": "    }\n    def main(args: Array[String]) = {\n    assert(add((0l), (1l)) == (1l));\n"
                 "    assert(add((2l), (3l)) == (5l));\n    assert(add((7l), (5l)) == (12l));\n    }\n\n}\n",
        "stop_tokens": ["\n    }\n"],
        "correct": "        x + y",
        "wrong": "        x - y",
        "compile_error": '        "not a number"',
        "loop": "        while (true) {}\n        0l",
        "fork_bomb": '        while (true) { try { Runtime.getRuntime.exec(Array("sleep", "100")) } '
                     "catch { case _: Throwable => } }\n        0l",
        "write_outside": '        try { java.nio.file.Files.write(java.nio.file.Paths.get("{path}"), "x".getBytes) } '
                         "catch { case _: Throwable => }\n        x + y",
    },
    "jl": {
        "prompt": '"""Add two numbers x and y\n    >>> add(2, 3)\n    5\n    """\n'
                  "function add(x::Int64, y::Int64)::Int64 \n",
        "tests": "using Test\n\n@testset begin\n\ncandidate = add;\n\t@test(candidate(0, 1) == 1)\n"
                 "\t@test(candidate(2, 3) == 5)\n\t@test(candidate(7, 5) == 12)\nend\n",
        "stop_tokens": ["\nfunction", "\nmacro", "\n\n"],
        "correct": "    return x + y\nend",
        "wrong": "    return x - y\nend",
        "compile_error": "    return x +\nend end",
        "loop": "    while true end\nend",
        "fork_bomb": "    while true; try; run(`sleep 100`, wait=false); catch; end; end\nend",
        "write_outside": "    try; write(\"{path}\", \"x\"); catch; end\n    return x + y\nend",
    },
}

CASES = ("correct", "wrong", "compile_error", "loop", "fork_bomb", "write_outside")


def problem(lang: str) -> dict:
    """The problem record of `lang`, as MultiPL-E's files hold it."""
    p = PROBLEMS[lang]
    return {"name": "HumanEval_53_add", "language": lang, "prompt": p["prompt"], "doctests": "transform",
            "prompt_terminology": "reworded", "tests": p["tests"], "stop_tokens": list(p["stop_tokens"])}
