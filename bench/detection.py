"""Detection and false-alarm rates of gradcheck on the bug zoo and the tricky-but-correct layers.

    .venv/bin/python bench/detection.py [--seeds 3]

For every buggy case (tests/plugins/buggy_zoo.py) and seed: detected = exit 1 with exactly the
buggy layer as root cause. For every tricky-but-correct case (tests/plugins/tricky_ok.py) and
seed: a false alarm = exit 1. Prints a Markdown table of the rates and the cases that missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gradcheck import check_network  # noqa: E402
from zoo_cases import BUGGY, TRICKY_OK  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per case (default 3)")
    args = parser.parse_args()
    started = time.perf_counter()
    detected, blamed_wrong, missed = 0, [], []
    alarms, kinks, inconclusive = [], 0, 0
    for seed in range(args.seeds):
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
    n_bugs, n_ok = len(BUGGY) * args.seeds, len(TRICKY_OK) * args.seeds
    print("| measure | value |\n|---|---|")
    print(f"| buggy cases x seeds | {len(BUGGY)} x {args.seeds} = {n_bugs} |")
    print(f"| detected with the right layer blamed | {detected} / {n_bugs} ({detected / n_bugs:.0%}) |")
    print(f"| detected, wrong layer blamed | {len(blamed_wrong)} |")
    print(f"| missed | {len(missed)} |")
    print(f"| correct-but-tricky cases x seeds | {len(TRICKY_OK)} x {args.seeds} = {n_ok} |")
    print(f"| false alarms | {len(alarms)} / {n_ok} ({len(alarms) / n_ok:.0%}) |")
    print(f"| kink / inconclusive elements reported in them | {kinks} / {inconclusive} |")
    print(f"| wall time | {time.perf_counter() - started:.1f} s |")
    for title, items in (("wrong blame", blamed_wrong), ("missed", missed), ("false alarms", alarms)):
        if items:
            print(f"\n{title}: " + "; ".join(items))


if __name__ == "__main__":
    main()
