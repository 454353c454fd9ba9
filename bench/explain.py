"""How long each `imagegen explain` picture and `imagegen report` take on trained models (wall seconds,
in-process, so Python's start-up is excluded; loading the model and the dataset is included). Prints a table and
writes bench/results/explain.json.

    python bench/explain.py [--classifier runs/demo/classifier] [--generator runs/bench/flow-15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import save, table
from imagegen.cli import main as cli


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", default="runs/demo/classifier")
    p.add_argument("--generator", default="runs/bench/flow-15")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "generator"  # a copy, so the report's pictures do not land in the benchmark's run
        shutil.copytree(args.generator, gen, ignore=shutil.ignore_patterns("pairs", "state.*"))
        jobs = [(args.classifier, ["explain", "attributions", args.classifier, "--n", "6"]),
                (args.classifier, ["explain", "mistakes", args.classifier]),
                (args.classifier, ["explain", "features", args.classifier]),
                (args.classifier, ["explain", "filters", args.classifier]),
                ("evaluator", ["explain", "attributions", "evaluator", "--n", "6"]),
                (str(gen), ["explain", "trajectory", str(gen), "--class", "5"]),
                (str(gen), ["explain", "walk", str(gen), "--class", "5"]),
                (str(gen), ["explain", "guidance", str(gen), "--class", "5"]),
                (str(gen), ["explain", "nearest", str(gen)]),
                (str(gen), ["report", str(gen)])]
        for model, argv in jobs:
            out = ["--out", f"{tmp}/{argv[1]}.png"] if argv[0] == "explain" else []
            t0 = time.perf_counter()
            code = cli([*argv, *out, "--no-progress"])
            name = " ".join(argv[:2]) if argv[0] == "explain" else "report"
            rows.append({"command": name, "model": Path(model).name, "seconds": time.perf_counter() - t0,
                         "exit": code})
            print(rows[-1], flush=True)
    save("explain", rows, settings="wall seconds in-process on this CPU; model and data loading included")
    print(table(rows, ["command", "model", "seconds", "exit"]))


if __name__ == "__main__":
    main()
