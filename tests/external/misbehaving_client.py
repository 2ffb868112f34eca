"""An identity layer over the external protocol that misbehaves on purpose: usage MODE.

Test helper for tests/test_external.py (plain Python, no gradcheck import). It writes its pid to
child.pid in its working directory (the YAML file's folder) so that the tests can prove it was
stopped. MODE is one of: ok, garbage, garbage_reply, version2, exit_early, hang_forward,
hang_with_grandchild, wrong_shape, error_build, flood, mixes_batch (declares it, plus an
unknown reply field), state (reports the sign of each output as its branch state).
"""

import os
import subprocess
import sys
import time

MODE = sys.argv[1]
with open("child.pid", "a") as pids:
    pids.write(f"{os.getpid()}\n")


def line():
    text = sys.stdin.readline()
    if not text:
        sys.exit(0)
    return text.rstrip("\n")


def send(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def read_message():
    verb, arrays, fields = line().strip(), {}, {}
    if verb == "quit":
        sys.exit(0)
    while True:
        tokens = line().split()
        if tokens == ["end"]:
            return verb, fields, arrays
        if tokens[0] == "array":
            arrays[tokens[1]] = (tokens[3:], line())
        else:
            fields[tokens[0]] = tokens[1:]


if MODE == "garbage":
    send("Loading my layer, please wait...\n")
    time.sleep(30)
line()
send("gradcheck-external 2 text\n" if MODE == "version2" else "gradcheck-external 1 text\n")
if MODE == "exit_early":
    sys.stderr.write("segmentation fault (pretend)\n")
    sys.exit(3)
while True:
    verb, fields, arrays = read_message()
    if verb == "build":
        if MODE == "garbage_reply":
            send("DEBUG: building\n")
        elif MODE == "error_build":
            send("error option 'filters' is required\n")
        else:
            extra = "mixes_batch 1\nfuture_field ignored\n" if MODE == "mixes_batch" else ""
            send(f"ok\noutput_shape {' '.join(fields['input_shape'])}\n{extra}end\n")
    elif verb == "forward":
        if MODE == "hang_forward":
            time.sleep(60)
        if MODE == "hang_with_grandchild":
            sleeper = subprocess.Popen(["sleep", "60"])
            with open("grandchild.pid", "w") as out:
                out.write(f"{sleeper.pid}\n")
            time.sleep(60)
        if MODE == "flood":
            send("x" * 100000)
            time.sleep(60)
        dims, values = arrays["x"]
        if MODE == "wrong_shape":
            # Answers with a batch of 1 whatever batch it was sent.
            per_sample = len(values.split()) // int(dims[0])
            dims, values = ["1", *dims[1:]], " ".join(values.split()[:per_sample])
        state = ""
        if MODE == "state":  # the sign of each output, as a ReLU would report its branch
            signs = " ".join("1" if float(v) > 0 else "0" for v in values.split())
            state = f"array state {len(dims)} {' '.join(dims)}\n{signs}\n"
        send(f"ok\narray y {len(dims)} {' '.join(dims)}\n{values}\n{state}end\n")
    elif verb == "backward":
        dims, values = arrays["grad_out"]
        send(f"ok\narray grad_x {len(dims)} {' '.join(dims)}\n{values}\nend\n")
