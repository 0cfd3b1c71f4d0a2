"""How well frozen ImageNet MobileNetV2 features of the grounded images separate the classes
at another backbone size: a logistic head on the training split, read on the validation
split as is and under five audit shifts. Minutes instead of a fine-tuning run, to choose
`hemalite train --work-size` (docs/pipeline.md: the grounded 224-px image resized inside the
model).

    .venv/bin/python scripts/experiments/feature_probe.py 224 320

An experiment, not part of hemalite; never reads the test split.

In the notebook, benchmarks/reports/grounding_ablation.md: session 7, "Why": the logistic
head on frozen features at 224, 288 and 320 px that led to `--work-size 288`.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hemalite import shifts
from hemalite.train import data
from hemalite.train import model as models
from hemalite.train.fit import TrainConfig, prepare_splits

CASES = (None, ("brightness", 1.2), ("hue", -15.0), ("blur", 1.5), ("magnification", 1.5),
         ("magnification", 0.7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--data", default="../shared/data/all4")
    parser.add_argument("--weights", default="../shared/weights/"
                        "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5")
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression

    cfg = TrainConfig(data_dir=args.data, out="unused")
    splits, _, _ = prepare_splits(cfg)
    (x_tr, y_tr, _), (x_va, y_va, _) = (data.load_pixels(cfg.data_dir, splits[s], cfg.spec, False)
                                        for s in ("train", "val"))
    print("size  seconds  " + "  ".join("as is" if c is None else shifts.shift_name(*c)
                                        for c in CASES))
    for size in args.sizes:
        start = time.time()
        model, _, _ = models.build_mobilenet(4, cfg.image_size, 1.0, args.weights,
                                             work_size=size)
        extractor = models.feature_extractor(model)  # the model's own Ground, Resize, scale

        def features(images):
            return extractor.predict(images.astype("float32"), batch_size=32, verbose=0)

        head = LogisticRegression(C=0.5, max_iter=3000).fit(features(x_tr), y_tr)
        row = []
        for case in CASES:
            shifted = x_va if case is None else np.stack([shifts.apply_shift(i, *case)
                                                          for i in x_va])
            row.append(100 * float((head.predict(features(shifted)) == y_va).mean()))
        print(f"{size:4d}  {time.time() - start:7.0f}  " + "  ".join(f"{v:5.1f}" for v in row),
              flush=True)


if __name__ == "__main__":
    main()
