#!/usr/bin/env python3
"""A dense layer y = x W + b served over gradcheck's external-layer protocol, version 1.

A "foreign" client: plain Python with no imports beyond the standard library (no numpy, no
gradcheck), written from docs/external-protocol.md the way a MATLAB or Fortran user would write
theirs. It asks for the *text* array encoding: one line of decimal numbers per array.

    usage: dense_client.py [--buggy]

--buggy makes the bias gradient the *mean* over the batch instead of the sum, a classic slip
that only shows with more than one sample; gradcheck blames this layer for it.
Options (from the YAML): units (int, required).
"""

import math
import random
import sys

VERSION = "1"
BUGGY = "--buggy" in sys.argv[1:]


def read_line():
    line = sys.stdin.readline()
    if not line:  # end of input: gradcheck has gone, so must we
        sys.exit(0)
    return line.rstrip("\r\n")


def read_message():
    """(verb, fields, arrays): fields maps a name to its list of tokens; arrays name -> (shape, values)."""
    verb = read_line().strip()
    fields, arrays = {}, {}
    if verb == "quit":
        return verb, fields, arrays
    while True:
        tokens = read_line().split()
        if tokens == ["end"]:
            return verb, fields, arrays
        if tokens[0] == "array":
            ndim = int(tokens[2])
            shape = [int(t) for t in tokens[3:3 + ndim]]
            values = [float(t) for t in read_line().split()]
            arrays[tokens[1]] = (shape, values)
        elif tokens[0] == "option":
            fields.setdefault("option", {})[tokens[1]] = tokens[2:]
        else:
            fields[tokens[0]] = tokens[1:]


def write_array(name, shape, values):
    sys.stdout.write(f"array {name} {len(shape)} {' '.join(map(str, shape))}\n")
    sys.stdout.write(" ".join(repr(float(v)) for v in values) + "\n")


def reply(arrays, fields=()):
    sys.stdout.write("ok\n")
    for line in fields:
        sys.stdout.write(line + "\n")
    for name, shape, values in arrays:
        write_array(name, shape, values)
    sys.stdout.write("end\n")
    sys.stdout.flush()


def fail(message):
    sys.stdout.write(f"error {message}\n")
    sys.stdout.flush()


def main():
    if read_line().split() != ["gradcheck-external", VERSION]:
        sys.stderr.write("dense_client: gradcheck speaks another protocol version\n")
        sys.exit(2)
    sys.stdout.write(f"gradcheck-external {VERSION} text\n")
    sys.stdout.flush()
    units = fan_in = 0
    while True:
        verb, fields, arrays = read_message()
        if verb == "quit":
            return
        if verb == "build":
            options = fields.get("option", {})
            shape = [int(t) for t in fields["input_shape"][1:]]
            if "units" not in options:
                fail("option 'units' is required")
                continue
            if len(shape) != 1:
                fail(f"dense needs a flat input (one dimension), got shape {shape}; add a flatten layer")
                continue
            units, fan_in = int(options["units"][0]), shape[0]
            rng = random.Random(int(fields["seed"][0]))
            scale = 1.0 / math.sqrt(fan_in)
            weights = [rng.gauss(0.0, scale) for _ in range(fan_in * units)]
            bias = [rng.gauss(0.0, 0.1) for _ in range(units)]
            reply([("W", [fan_in, units], weights), ("b", [units], bias)],
                  [f"output_shape 1 {units}"])
        elif verb == "forward":
            x_shape, x = arrays["x"]
            _, w = arrays["W"]
            _, b = arrays["b"]
            n = x_shape[0]
            y = [b[j] + sum(x[s * fan_in + i] * w[i * units + j] for i in range(fan_in))
                 for s in range(n) for j in range(units)]
            reply([("y", [n, units], y)])
        elif verb == "backward":
            x_shape, x = arrays["x"]
            _, w = arrays["W"]
            _, g = arrays["grad_out"]
            n = x_shape[0]
            grad_x = [sum(g[s * units + j] * w[i * units + j] for j in range(units))
                      for s in range(n) for i in range(fan_in)]
            grad_w = [sum(x[s * fan_in + i] * g[s * units + j] for s in range(n))
                      for i in range(fan_in) for j in range(units)]
            grad_b = [sum(g[s * units + j] for s in range(n)) for j in range(units)]
            if BUGGY:
                grad_b = [v / n for v in grad_b]  # BUG: mean instead of sum over the batch
            reply([("grad_x", x_shape, grad_x), ("W", [fan_in, units], grad_w),
                   ("b", [units], grad_b)])
        else:
            fail(f"unknown request {verb!r}")


if __name__ == "__main__":
    main()
