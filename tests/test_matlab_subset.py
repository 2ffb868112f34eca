"""The .m client is written to run unchanged in MATLAB (not available here to run it): it keeps
to the syntax MATLAB shares with GNU Octave, by a lint for what Octave accepts silently and by
Octave's own language-extension warnings while it serves a whole session (with a pure protocol
stream on stdout). Both checks are shown to fail on Octave-only code."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import EXTERNAL_EXAMPLES, OCTAVE_FLAGS
from gradcheck.external_protocol import encode_message
from matlab_subset import octave_only

M_FILES = ("gc_protocol.m", "conv2d_client.m")


@pytest.mark.parametrize("m_file", M_FILES)
def test_m_files_keep_to_the_syntax_matlab_shares_with_octave(m_file):
    assert octave_only((EXTERNAL_EXAMPLES / m_file).read_text()) == []


def test_the_subset_lint_finds_octave_only_syntax_and_nothing_else():
    source = "\n".join([
        "function octave_habits()",                      # 1
        "  # a hash comment",                             # 2
        "  x = 1; x += 2; x++;",                          # 3
        "  if x != 3, printf('%d', x); endif",            # 4
        "  y = ones(3)(2, :) ** 2;",                      # 5
        "  s = \"double quoted\";",                       # 6
        "  t = x' + y.'; u = 'it''s # not a comment %';", # 7: transposes and quotes are fine
        "  if exist('OCTAVE_VERSION', 'builtin')",        # 8
        "      fflush(stdout);",                          # 9: guarded, so fine
        "  end",                                          # 10
        "  fflush(stdout);",                              # 11
        "endfunction",                                    # 12
    ])
    found = octave_only(source)
    assert sorted({line for line, _ in found}) == [2, 3, 4, 5, 6, 11, 12], found
    text = "\n".join(f"{line}: {what}" for line, what in found)
    for expected in ["2: a comment starting with '#'", "3: '++'", "3: an assignment operator",
                     "4: '!'", "4: the Octave-only function printf()",
                     "4: the Octave-only keyword 'endif'", "5: indexing a call's result",
                     "5: '**'", "6: a double-quoted string", "11: the Octave-only function "
                     "fflush()", "12: the Octave-only keyword 'endfunction'"]:
        assert expected in text, text


def _octave_session(octave: str, folder: Path, call: str, requests: bytes):
    """Run ``call`` in Octave with its language-extension warnings on, feeding it ``requests``.
    Returns (the completed process, the warnings about .m files in ``folder``): Octave's own
    library files use its extensions too, and are parsed after the warning is switched on."""
    result = subprocess.run([octave, *OCTAVE_FLAGS, "--path", str(folder), "--eval",
                             f"warning('on', 'Octave:language-extension'); {call}"],
                            input=requests, capture_output=True, timeout=60)
    warnings = [line for line in result.stderr.decode().splitlines()
                if "language extension used" in line and
                re.search(r"of ?file (\S+)$", line).group(1).startswith(f"{folder}/")]
    return result, warnings


def _replies(stream: bytes) -> list[tuple[str, dict]]:
    """The replies on a binary-encoded client's stdout: (first line, {array name: shape})."""
    replies, position = [], 0

    def line() -> str:
        nonlocal position
        end = stream.index(b"\n", position)
        text, position = stream[position:end].decode(), end + 1
        return text

    assert line() == "gradcheck-external 1 binary"
    while position < len(stream):
        first, arrays = line(), {}
        while first == "ok" and (text := line()) != "end":
            if text.startswith("array "):
                _, name, ndim, *dims = text.split()
                arrays[name] = tuple(map(int, dims))
                assert int(ndim) == len(dims)
                position += 8 * math.prod(arrays[name])
        replies.append((first, arrays))
    return replies


def test_octave_reports_no_language_extension_while_serving_a_session(octave):
    rng = np.random.default_rng(0)
    fields = [("seed", "3"), ("input_shape", "3 2 4 4"), ("option", "filters 2"),
              ("option", "padding 1")]
    build = encode_message("build", fields, [], "binary")
    params = [("W", rng.normal(size=(2, 2, 3, 3))), ("b", rng.normal(size=2))]
    x = [("x", rng.normal(size=(2, 2, 4, 4)))]
    forward = encode_message("forward", [("training", "1")], x + params, "binary")
    backward = encode_message("backward", [("training", "1")],
                              x + params + [("grad_out", rng.normal(size=(2, 2, 4, 4)))], "binary")
    unknown = encode_message("jump", [], [], "binary")
    session = b"gradcheck-external 1\n" + build + forward + backward + unknown + b"quit\n"
    result, warnings = _octave_session(octave, EXTERNAL_EXAMPLES, "conv2d_client", session)
    assert result.returncode == 0, result.stderr
    assert warnings == []
    assert _replies(result.stdout) == [
        ("ok", {"W": (2, 2, 3, 3), "b": (2,)}), ("ok", {"y": (2, 2, 4, 4)}),
        ("ok", {"grad_x": (2, 2, 4, 4), "W": (2, 2, 3, 3), "b": (2,)}),
        ("error unknown request 'jump'", {})]


def test_octave_language_extension_warnings_are_seen_when_present(octave, tmp_path):
    """The check above can fail: Octave-only operators in a client do show up on its stderr."""
    (tmp_path / "habits.m").write_text("function habits()\nx = 1;\nx += 1;\nif x != 2\n"
                                       "  error('unreachable');\nend\nend\n")
    result, warnings = _octave_session(octave, tmp_path, "habits", b"")
    assert result.returncode == 0, result.stderr
    assert len(warnings) == 2 and "+=" in warnings[0] and "!=" in warnings[1], warnings
