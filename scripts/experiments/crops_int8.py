"""A crops run (cell_crops.py) in int8 beside the bundled int8 file (W): validation accuracy
per image under every audit shift (the windows, W, the two averaged, as `cell_crops.py
--evaluate-only --with` does in Keras float), then one window's and one image's invoke time
(1 thread, `hemalite bench`'s invoke_latency: median of 50 after 10) and the file size. An
experiment, not part of hemalite; reads the training split (calibration) and the validation
split only.

    .venv/bin/python scripts/experiments/crops_int8.py runs/crops4

In the notebook, benchmarks/reports/grounding_ablation.md: session 12's int8 pair (C2 and C4
beside the bundled file) and its cost bullet (one window's and one image's invoke time, the
file size); session 13's int8 column (C5-C9).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import cell_crops as cc  # noqa: E402  (a sibling script)

from hemalite import shifts  # noqa: E402
from hemalite.benchmarks.measure import invoke_latency  # noqa: E402
from hemalite.convert.export import load_run  # noqa: E402
from hemalite.edge.runtime import default_model_path, load_model  # noqa: E402
from hemalite.train import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a cell_crops.py run folder (its model.keras, "
                                    "geometry.json and split_from.txt)")
    out = Path(parser.parse_args().run)
    geometry = json.loads((out / "geometry.json").read_text())
    cc.CROP, cc.SIZE = geometry["crop"], geometry["size"]
    split = load_run(Path(out / "split_from.txt").read_text().strip())
    xt, yt, _ = data.load_pixels(split.data_dir, split.samples("train")[::20], split.spec, False)
    calib, _, _ = cc.crops_of(xt, yt, 4)  # 4 windows of every 20th training image
    path = cc.to_tflite(out, "int8", calib)
    crops, whole = load_model(path, 2), load_model(default_model_path(), 2)
    x, y, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, False)
    cases = [("as is", None)] + [(shifts.shift_name(n, v), (n, v)) for n, v in shifts.AUDIT_SHIFTS]
    rows = {"crops": [], "whole": [], "both": []}

    class Windows:  # image_probs calls model.predict(windows, ...)
        @staticmethod
        def predict(windows, **_):
            return crops.predict_batch(windows.astype(np.uint8))

    for name, shift in cases:
        xs = x if shift is None else np.stack([shifts.apply_shift(img, *shift) for img in x])
        p_crops, _, _ = cc.image_probs(Windows, xs, y, len(split.labels))
        p_whole = whole.predict_batch(xs)
        for kind, p in (("crops", p_crops), ("whole", p_whole), ("both", p_crops + p_whole)):
            rows[kind].append(100 * float(cc.right(p, y).mean()))
        print(f"{name:18s} " + "  ".join(f"{k} {v[-1]:5.1f}" for k, v in rows.items()), flush=True)
    for kind, v in rows.items():
        print(f"{kind} int8: as is {v[0]:.1f}, mean of 12 {np.mean(v[1:]):.2f}, worst {min(v[1:]):.1f}")
    windows, _, _ = cc.crops_of(x, y, cc.EVAL_CELLS)
    window_ms = invoke_latency(str(path), 1, 50, 10, windows[0])["p50_ms"]
    image_ms = invoke_latency(str(default_model_path()), 1, 50, 10, x[0])["p50_ms"]
    print(f"1 thread: one window {window_ms:.2f} ms ({len(windows) / len(x):.1f} windows per "
          f"validation image), the bundled file {image_ms:.2f} ms per image; {path.name} "
          f"{path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
