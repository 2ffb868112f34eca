"""Time the char-LSTM's layers: forward, and perturbed copies by forward vs by perturbed_outputs.

The char-LSTM: ids (batch 4, T 16) from a vocabulary of 50 -> embedding (dim 32) -> lstm (64
units) -> dense (50 logits per step) -> sequence_cross_entropy. For every parameter, a full check
runs two perturbed copies (+h, -h) per element through the rest of the network; this prints the
cost of one copy made by ``forward`` with the element changed (what the engine does without the
optional method) and by ``perturbed_outputs`` (COPIES at once, as the engine chunks them), the
cost of a copy's tail (the layers after, and the loss), and what the full check of the
parameters then costs. With ``--whole`` it also times ``gradcheck check --mode full`` as a
process on the same network minus the embedding (today's chain networks take float inputs).

Run from the repository root (single-threaded BLAS, as the bench):
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/sequence_micro.py [COPIES=128] [--whole]
Each time is the best of 5.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gradcheck.registry import layer_class, loss_class

BATCH, STEPS, VOCAB, DIM, UNITS = 4, 16, 50, 32, 64
WHOLE_NETWORK = f"""name: char-lstm-without-embedding
seed: 0
input: {{shape: [{STEPS}, {DIM}], batch: {BATCH}}}
layers:
  - {{type: lstm, name: lstm, units: {UNITS}}}
  - {{type: dense, name: logits, units: {VOCAB}}}
loss: sequence_cross_entropy
"""


def best_time(function, *args, repeats: int = 5) -> tuple[float, object]:
    """(fastest wall time in seconds, last result) of ``repeats`` calls."""
    fastest, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest, result


def char_lstm(rng: np.random.Generator):
    """The built layers, the loss, the ids and the labels."""
    layers = [layer_class("embedding")(vocab=VOCAB, dim=DIM), layer_class("lstm")(units=UNITS),
              layer_class("dense")(units=VOCAB)]
    shape = (STEPS,)
    for layer in layers:
        shape = layer.build(shape, rng)
    loss = loss_class("sequence_cross_entropy")()
    loss.build(shape)
    return (layers, loss, rng.integers(0, VOCAB, (BATCH, STEPS)),
            rng.integers(0, VOCAB, (BATCH, STEPS)))


def by_forward(layer, x, name, indices, values):
    """The copies as the engine makes them without perturbed_outputs: one forward each."""
    flat = layer.params[name].reshape(-1)
    out = []
    for i, v in zip(indices, values):
        saved, flat[i] = flat[i], v
        out.append(layer.forward(x))
        flat[i] = saved
    return np.stack(out)


def tail_time(layers, loss, start, copies_out, target) -> float:
    """Seconds to run stacked copies (k, batch, ...) through layers[start:] and the loss."""
    def run():
        x = copies_out.reshape(-1, *copies_out.shape[2:])
        for layer in layers[start:]:
            x = layer.forward(x)
        return loss.forward_many(x.reshape(len(copies_out), BATCH, *x.shape[1:]), target)
    return best_time(run)[0]


def main(copies: int, whole: bool) -> None:
    rng = np.random.default_rng(0)
    layers, loss, ids, target = char_lstm(rng)
    inputs = [ids]
    for layer in layers:
        inputs.append(layer.forward(inputs[-1]))
    print(f"char-LSTM: batch {BATCH}, T {STEPS}, vocab {VOCAB}, embedding {DIM}, units {UNITS}; "
          f"{copies} copies per perturbed_outputs call")
    total = 0.0
    for k, layer in enumerate(layers):
        seconds, _ = best_time(layer.forward, inputs[k])
        print(f"{layer.registered_name:10s} forward {seconds * 1e6:8.1f} us")
        for name, param in layer.params.items():
            indices = rng.integers(0, param.size, copies)
            values = param.reshape(-1)[indices] + 1e-6
            slow, _ = best_time(by_forward, layer, inputs[k], name, indices[:16], values[:16],
                                repeats=3)
            fast, out = best_time(layer.perturbed_outputs, inputs[k], name, indices, values)
            tail = tail_time(layers, loss, k + 1, out, target)
            per_copy = (fast + tail) / copies
            check = 2 * param.size * per_copy
            total += check
            print(f"  {name:3s} {param.size:6d} elements: a copy by forward {slow / 16 * 1e6:7.1f}"
                  f" us, by perturbed_outputs {fast / copies * 1e6:6.1f} us "
                  f"({slow / 16 / (fast / copies):4.1f}x), its tail {tail / copies * 1e6:5.1f} us;"
                  f" all +h/-h copies {check:5.2f} s")
    print(f"parameters' copies in a full check: {total:.2f} s")
    if whole:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "char_lstm.yaml"
            path.write_text(WHOLE_NETWORK)
            command = [str(Path(sys.executable).parent / "gradcheck"), "check", str(path),
                       "--mode", "full"]
            start = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
        print(f"gradcheck check --mode full, lstm + dense + loss (no embedding), whole process: "
              f"{seconds:.2f} s, exit code {result.returncode}")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--whole"]
    main(int(arguments[0]) if arguments else 128, "--whole" in sys.argv[1:])
