"""Seconds per fine-tuning step of the whole MobileNetV2 (batch 32, BatchNorm frozen, Adam),
at each backbone size given: what `hemalite train --work-size` costs on this machine,
without a training run. Random pixels: the time of a step does not depend on them.

    .venv/bin/python scripts/experiments/step_time.py 224 288 [--steps 6] [--from block_6_expand]

An experiment, not part of hemalite.

In the notebook, benchmarks/reports/grounding_ablation.md: the seconds per fine-tuning step
of session 7 (224 against 288 px, AMD), 8 (`--from`, 288 px), 9 (224 against 288 px, Xeon)
and 10 (the table of layers fine-tuned from).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--from", dest="first", default="Conv1",
                        help="first backbone layer fine-tuned (hemalite train --fine-tune-from)")
    parser.add_argument("--weights", default="../shared/weights/"
                        "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5")
    args = parser.parse_args()

    import keras

    from hemalite.train import model as models

    x = np.random.default_rng(0).integers(0, 256, (32 * args.steps, 224, 224, 3)).astype("float32")
    y = np.arange(len(x)) % 4
    for size in args.sizes:
        model, backbone, _ = models.build_mobilenet(4, 224, 1.0, args.weights, 0.2, True, size)
        models.set_fine_tuning(backbone, args.first)
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # build and trace
        start = time.perf_counter()
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        step = (time.perf_counter() - start) / args.steps
        print(f"{size} px from {args.first}: {step:.2f} s a step, "
              f"{step * 66 / 60:.1f} min an epoch of all4's "
              f"2085 training images", flush=True)


if __name__ == "__main__":
    main()
