r"""Invoke time of two or more .tflite files, alternating so that a VM's drifting speed hits
them alike: one all4 image, per thread count three rounds of `hemalite bench`'s own
measurement (benchmarks.measure.invoke_latency: 10 warm-up invokes, then the median of 100)
per file. An experiment (grounding_ablation.md, session 13).

    .venv/bin/python scripts/experiments/compare_latency.py hemalite/models/hemalite_int8.tflite \
        runs/two_pass/model_int8.tflite

In the notebook, benchmarks/reports/grounding_ablation.md: the last section (the 5 x 5 mean
as two passes, session 13), the whole-model invoke times of the bundled files against the
re-exported ones.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hemalite.benchmarks.measure import invoke_latency
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--image", default=None,
                        help="default: the first image of ../shared/data/all4/Pre")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    image = args.image or sorted(Path("../shared/data/all4/Pre").iterdir())[0]
    pixels = preprocess(load_image(image), load_model(args.models[0]).info.spec)
    for threads in args.threads:
        rounds = {path: [] for path in args.models}
        for _ in range(3):
            for path in args.models:
                rounds[path].append(invoke_latency(path, threads, 100, 10, pixels)["p50_ms"])
        for path, ms in rounds.items():
            print(f"{threads} thread(s)  {path}: " + " / ".join(f"{v:.2f}" for v in ms) + " ms")


if __name__ == "__main__":
    main()
