"""Start-up: how long gradcheck takes before and around a check, against the time of
``python -c "import numpy"`` on the same machine, measured in one run.

    .venv/bin/python bench/startup.py [--repeats N] [--top K]

Each figure is the best of N runs, and the runs are interleaved (one of each figure per round),
so a burst of load from other work on a shared machine falls on every side alike. The CPU time
(user + system) of the same runs is printed too: other work slows a run's wall time but hardly
its CPU time, so on a busy machine the CPU ratios are the better guess of an idle machine's. Targets: ``gradcheck --version`` and ``gradcheck check --help`` at most 1.5x
the numpy import; a whole ``gradcheck check`` process on network N1 of bench/bench.py at most
2.5x the numpy import plus the check itself: ``check_network`` on N1 timed inside a fresh
interpreter, once, after the imports (as the command runs it: a second check in a warm
interpreter would be faster, and the difference would wrongly count as start-up).
Then the slowest imports of that process, from ``python -X importtime`` (which does not list
modules loaded by ``importlib.import_module`` themselves, only what they import: the renderers
and gradcheck's lazy public names).
"""

from __future__ import annotations

import argparse
import ast
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench.py"
GRADCHECK = Path(sys.executable).with_name("gradcheck")
TARGETS = {"version": 1.5, "help": 1.5, "overhead": 2.5}


def n1_config() -> dict:
    """Network N1 as bench/bench.py defines it, read from its source (importing bench.py would
    import torch and the engine's internals)."""
    tree = ast.parse(BENCH.read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in ("CONV", "NETWORKS"):
                names[target.id] = node.value
    # NETWORKS refers to CONV (a string): substitute it, then read the literal.
    networks = ast.literal_eval(_substitute(names["NETWORKS"], {"CONV": names["CONV"]}))
    return networks["N1"]


def _substitute(node: ast.AST, values: dict[str, ast.AST]) -> ast.AST:
    class Names(ast.NodeTransformer):
        def visit_Name(self, name):
            return values.get(name.id, name)

    return Names().visit(node)


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its finished children."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# Times check_network once in a fresh interpreter, after its imports; prints wall and CPU s.
CHECK_ONCE = """
import sys, time
import gradcheck.layers
from gradcheck.check import check_network
from gradcheck.resources import reuse_freed_memory
reuse_freed_memory()
wall, cpu = time.perf_counter(), time.process_time()
check_network(sys.argv[1])
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def best_of(repeats: int, runs: dict) -> tuple[dict[str, float], dict[str, float]]:
    """The best wall time and the best CPU time of each of ``runs`` (name -> function), over
    ``repeats`` rounds that run each once. A function that returns (wall, cpu) has timed
    itself; otherwise the call is timed."""
    wall, cpu = dict.fromkeys(runs, float("inf")), dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started, cpu_started = time.perf_counter(), cpu_seconds()
            timed = run() or (time.perf_counter() - started, cpu_seconds() - cpu_started)
            wall[name], cpu[name] = min(wall[name], timed[0]), min(cpu[name], timed[1])
    return wall, cpu


def process(*argv, timed_inside: bool = False) -> callable:
    def run():
        result = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{argv} exited {result.returncode}: {result.stderr[-400:]}")
        if timed_inside:
            return tuple(float(t) for t in result.stdout.split())
        return None

    return run


def slowest_imports(argv: list[str], top: int) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, indented name) of the ``top`` slowest imports of ``argv``."""
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                            text=True)
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(cumulative), int(own), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per figure (best is kept)")
    parser.add_argument("--top", type=int, default=15, help="slowest imports to list")
    args = parser.parse_args(argv)

    import yaml

    config = n1_config()
    with tempfile.TemporaryDirectory() as folder:
        n1 = Path(folder) / "n1.yaml"
        n1.write_text(yaml.safe_dump(config))
        seconds, cpu = best_of(args.repeats, {
            "numpy": process(sys.executable, "-c", "import numpy"),
            "version": process(GRADCHECK, "--version"),
            "help": process(GRADCHECK, "check", "--help"),
            "process": process(GRADCHECK, "check", n1),
            "check": process(sys.executable, "-c", CHECK_ONCE, n1, timed_inside=True),
        })
        imports = slowest_imports([str(GRADCHECK), "check", str(n1)], args.top)
    for figures in (seconds, cpu):
        figures["overhead"] = figures["process"] - figures["check"]
    numpy = seconds["numpy"]
    rows = [("numpy", 'python -c "import numpy"', "the yardstick"),
            ("version", "gradcheck --version", "<= 1.5x"),
            ("help", "gradcheck check --help", "<= 1.5x"),
            ("process", "gradcheck check n1.yaml (whole process)", ""),
            ("check", "check_network(N1), timed inside a fresh interpreter", ""),
            ("overhead", "process - check", "<= 2.5x")]
    print(f"best of {args.repeats} interleaved runs each; Python {sys.version.split()[0]}\n")
    print("| what | command | wall s | x numpy | CPU s | x numpy | target (wall) |")
    print("|---|---|--:|--:|--:|--:|---|")
    for key, command, target in rows:
        ratio = seconds[key] / numpy
        verdict = ""
        if key in TARGETS:
            verdict = "met" if ratio <= TARGETS[key] else "MISSED"
        print(f"| {key} | `{command}` | {seconds[key]:.3f} | {ratio:.2f}x | {cpu[key]:.3f} | "
              f"{cpu[key] / cpu['numpy']:.2f}x | {target} {verdict} |")
    print("\nslowest imports of `gradcheck check n1.yaml` (python -X importtime, µs):")
    print(f"{'cumulative':>11} {'self':>8}  module")
    for cumulative, own, name in imports:
        print(f"{cumulative:>11,} {own:>8,}  {name}")
    return 0 if all(seconds[k] / numpy <= limit for k, limit in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
