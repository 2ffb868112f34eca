"""Detection and false-alarm rates of gradcheck on the bug zoo and the tricky-but-correct layers,
and (``--sensitivity``) how small a bug it still catches.

    .venv/bin/python bench/detection.py [--seeds 3] [--sensitivity]

For every buggy case (tests/plugins/buggy_zoo.py) and seed: detected = exit 1 with exactly the
buggy layer as root cause. For every tricky-but-correct case (tests/plugins/tricky_ok.py) and
seed: a false alarm = exit 1. Prints a Markdown table of the rates and the cases that missed.

``--sensitivity`` adds, in float64 and in float32 networks: false alarms over correct layers
with parameters and activations at every pair of scales 1e-6 ... 1e6 (``zoo_cases.scale_case``),
and for each relative error r from 1e-6 to 1e-1 how many seeds catch a layer whose backward is
off by the factor 1 + r, and one whose backward is off by r * |g| in three elements of dL/dW
(tests/plugins/verdict_bugs.py), with the right root cause. The smallest r caught at every seed,
with every larger r caught at every seed too, is the detection limit.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gradcheck import check_network  # noqa: E402
from zoo_cases import BUGGY, GRADED, SCALES, TRICKY_OK, graded_case, scale_case  # noqa: E402

DTYPES = ("float64", "float32")
# Relative errors of the graded bugs: 1, 1.5, 2, 3, 5 and 7 per decade, 1e-6 ... 1e-1.
RELATIVE_ERRORS = tuple(m * 10.0 ** e for e in range(-6, -1) for m in (1, 1.5, 2, 3, 5, 7)) \
    + (1e-1,)


def caught(config: dict, culprit: str, seed: int) -> bool:
    """Whether the check fails with exactly ``culprit`` as root cause."""
    report = check_network({**config, "seed": seed})
    return report.exit_code == 1 and report.root_causes == [culprit]


def zoo_table(seeds: int) -> list[str]:
    """The bug zoo and the tricky-but-correct layers: rates and what missed."""
    detected, blamed_wrong, missed = 0, [], []
    alarms, kinks, inconclusive = [], 0, 0
    for seed in range(seeds):
        for name, (config, culprit) in BUGGY.items():
            report = check_network({**config, "seed": seed})
            if report.exit_code == 1 and report.root_causes == [culprit]:
                detected += 1
            elif report.exit_code == 1:
                blamed_wrong.append(f"{name} (seed {seed}: {report.root_causes})")
            else:
                missed.append(f"{name} (seed {seed})")
        for name, config in TRICKY_OK.items():
            report = check_network({**config, "seed": seed})
            counts = report.counts()
            kinks += counts["kinks"]
            inconclusive += counts["inconclusive"]
            if report.exit_code != 0:
                alarms.append(f"{name} (seed {seed}: {report.root_causes})")
    n_bugs, n_ok = len(BUGGY) * seeds, len(TRICKY_OK) * seeds
    lines = ["| measure | value |", "|---|---|",
             f"| buggy cases x seeds | {len(BUGGY)} x {seeds} = {n_bugs} |",
             f"| detected with the right layer blamed | {detected} / {n_bugs} "
             f"({detected / n_bugs:.0%}) |",
             f"| detected, wrong layer blamed | {len(blamed_wrong)} |",
             f"| missed | {len(missed)} |",
             f"| correct-but-tricky cases x seeds | {len(TRICKY_OK)} x {seeds} = {n_ok} |",
             f"| false alarms | {len(alarms)} / {n_ok} ({len(alarms) / n_ok:.0%}) |",
             f"| kink / inconclusive elements reported in them | {kinks} / {inconclusive} |"]
    for title, items in (("wrong blame", blamed_wrong), ("missed", missed),
                         ("false alarms", alarms)):
        if items:
            lines.append(f"\n{title}: " + "; ".join(items))
    return lines


def detection_limit(counts: dict[float, int], seeds: int) -> float | None:
    """The smallest relative error caught at every seed, every larger one caught too."""
    limit = None
    for rel in sorted(counts, reverse=True):
        if counts[rel] < seeds:
            break
        limit = rel
    return limit


def sensitivity_table(seeds: int) -> list[str]:
    """False alarms over correct layers at every scale, and detection by relative error."""
    lines = []
    alarms = {}
    for dtype in DTYPES:
        alarms[dtype] = [f"{p:g}/{q:g} (seed {seed})"
                         for p, q in itertools.product(SCALES, SCALES) for seed in range(seeds)
                         if check_network({**scale_case(p, q, dtype), "seed": seed}).exit_code]
    counts = {(dtype, kind): {rel: sum(caught(*graded_case(kind, rel, dtype), seed)
                                       for seed in range(seeds)) for rel in RELATIVE_ERRORS}
              for dtype in DTYPES for kind in GRADED}
    correct = {(dtype, kind): sum(check_network({**graded_case(kind, 0.0, dtype)[0],
                                                 "seed": seed}).exit_code != 0
                                  for seed in range(seeds))
               for dtype in DTYPES for kind in GRADED}
    n_scales = len(SCALES) ** 2 * seeds
    columns = [f"{dtype} {kind}" for dtype in DTYPES for kind in GRADED]
    lines += [f"| relative error r | {' | '.join(columns)} |",
              "|---:|" + "---:|" * len(columns)]
    for rel in RELATIVE_ERRORS:
        cells = [f"{counts[(d, k)][rel]}/{seeds}" for d in DTYPES for k in GRADED]
        lines.append(f"| {rel:.1e} | {' | '.join(cells)} |")
    lines.append(f"| 0 (the correct twin): false alarms | "
                 f"{' | '.join(str(correct[(d, k)]) for d in DTYPES for k in GRADED)} |")
    for dtype in DTYPES:
        limits = ", ".join(f"{kind}: {detection_limit(counts[(dtype, kind)], seeds):.1e}"
                           for kind in GRADED)
        lines.append(f"\n{dtype}: smallest r caught at every seed ({limits}); false alarms over "
                     f"correct layers at scales {SCALES[0]:g} ... {SCALES[-1]:g}: "
                     f"{len(alarms[dtype])} / {n_scales}"
                     + (f" ({'; '.join(alarms[dtype])})" if alarms[dtype] else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per case (default 3)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="also sweep scales and relative errors (a minute or two)")
    args = parser.parse_args()
    started = time.perf_counter()
    print("\n".join(zoo_table(args.seeds)))
    if args.sensitivity:
        print()
        print("\n".join(sensitivity_table(args.seeds)))
    print(f"\nwall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
