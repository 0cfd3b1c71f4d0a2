"""Invoke time of two or more .tflite files, alternating so that a VM's drifting speed hits
them alike: one test image, per thread count three rounds of (10 warm-up, median of 100
invokes) per file. An experiment (grounding_ablation.md, session 13).

    .venv/bin/python scripts/experiments/compare_latency.py hemalite/models/hemalite_int8.tflite \
        runs/two_pass/model_int8.tflite
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from hemalite.contract import preprocess
from hemalite.edge.runtime import load_model


def median_ms(model, x: np.ndarray, n: int = 100, warmup: int = 10) -> float:
    for _ in range(warmup):
        model.predict(x)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        model.predict(x)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--image", default=None,
                        help="default: the first image of ../shared/data/all4/Pre")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    image = Path(args.image) if args.image else sorted(Path("../shared/data/all4/Pre").iterdir())[0]
    rgb = np.asarray(Image.open(image).convert("RGB"))
    for threads in args.threads:
        models = {path: load_model(path, threads) for path in args.models}
        x = preprocess(rgb, next(iter(models.values())).info.spec)
        rounds = {path: [] for path in models}
        for _ in range(3):
            for path, model in models.items():
                rounds[path].append(median_ms(model, x))
        for path, ms in rounds.items():
            print(f"{threads} thread(s)  {path}: " + " / ".join(f"{v:.2f}" for v in ms) + " ms")


if __name__ == "__main__":
    main()
