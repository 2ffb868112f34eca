"""A lint for .m files meant to run unchanged in MATLAB and GNU Octave: it finds the Octave-only
syntax that Octave itself accepts silently (its 'Octave:language-extension' warning reports
operators such as != and +=, but not hash comments, double-quoted strings, endif or printf).

``octave_only(source)`` returns (line number, what) pairs. An Octave-only *function* is allowed
inside ``if exist('OCTAVE_VERSION', 'builtin') ... end``, where MATLAB never calls it. The lists
cover what an Octave user writes out of habit; they are not a full grammar of either language.
"""

from __future__ import annotations

import re

_OPERATORS = [
    (re.compile(r"!"), "'!' (MATLAB negates with '~')"),
    (re.compile(r"\+\+|--"), "'++' or '--'"),
    (re.compile(r"[-+*/^|&]="), "an assignment operator such as '+='"),
    (re.compile(r"\*\*"), "'**' (MATLAB raises with '^')"),
    (re.compile(r"\)\("), "indexing a call's result directly, f(x)(i)"),
]
_KEYWORDS = re.compile(r"\b(endfunction|endif|endfor|endwhile|endswitch|end_try_catch|"
                       r"unwind_protect\w*|end_unwind_protect|endparfor|until)\b|^\s*do\s*$")
_FUNCTIONS = re.compile(r"\b(printf|puts|fputs|fdisp|fflush|argv|program_name|print_usage)\s*\(")
_GUARD = re.compile(r"^\s*if\s+exist\s*\(\s*'OCTAVE_VERSION'\s*,\s*'builtin'\s*\)")
_OPENERS = {"if", "for", "parfor", "while", "switch", "try", "function"}


def _code(line: str) -> tuple[str, list[str]]:
    """The line's code with strings emptied and the comment dropped, and what was Octave-only
    in its strings and comments (a hash comment, a double-quoted string)."""
    code, found, i = [], [], 0
    while i < len(line):
        char = line[i]
        if char == "%":
            break
        if char == "#":
            found.append("a comment starting with '#' (MATLAB comments start with '%')")
            break
        if char == '"':
            found.append("a double-quoted string (use single quotes)")
            end = line.find('"', i + 1)
            i = len(line) if end < 0 else end + 1
            code.append("''")
            continue
        previous = line[i - 1] if i else " "
        if char == "'" and not (previous.isalnum() or previous in "_)]}.'"):
            # A string, not a transpose; '' inside it is an escaped quote.
            i += 1
            while i < len(line) and not (line[i] == "'" and line[i + 1:i + 2] != "'"):
                i += 2 if line[i:i + 2] == "''" else 1
            code.append("''")
            i += 1
            continue
        code.append(char)
        i += 1
    return "".join(code), found


def _statements(code: str) -> list[str]:
    """The statements of a line of code: split at ',' and ';' outside brackets."""
    statements, depth, start = [], 0, 0
    for i, char in enumerate(code):
        depth += (char in "([{") - (char in ")]}")
        if depth == 0 and char in ",;":
            statements.append(code[start:i])
            start = i + 1
    statements.append(code[start:])
    return [s.strip() for s in statements if s.strip()]


def octave_only(source: str) -> list[tuple[int, str]]:
    """(line number, what) for each piece of Octave-only syntax in ``source``."""
    findings: list[tuple[int, str]] = []
    blocks: list[bool] = []  # one entry per open block: whether it is an Octave-only guard
    in_block_comment = False
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() in ("%{", "%}"):
            in_block_comment = line.strip() == "%{"
            continue
        if in_block_comment:
            continue
        code, found = _code(line)
        findings += [(number, what) for what in found]
        findings += [(number, what) for pattern, what in _OPERATORS if pattern.search(code)]
        keyword = _KEYWORDS.search(code)
        if keyword:
            findings.append((number, f"the Octave-only keyword '{keyword.group(0).strip()}'"))
        function = _FUNCTIONS.search(code)
        if function and not any(blocks):
            findings.append((number, f"the Octave-only function {function.group(1)}() outside "
                                     "an if exist('OCTAVE_VERSION', 'builtin') block"))
        for statement in _statements(code):
            first = statement.split()[0].split("(")[0]
            if first in _OPENERS:
                blocks.append(bool(_GUARD.match(line)) and first == "if")
            elif first == "end" and blocks:
                blocks.pop()
    return findings
