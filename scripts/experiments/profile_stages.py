"""Where an invoke's time goes: the bundled architecture cut into stages, each converted as
`hemalite convert` converts the model (float32, and full-integer int8 calibrated on all4
training images), each timed alone. LiteRT's Python API has no per-operator profiler, so the
profile is by timed sub-graphs; a stage's cost is the difference between two prefixes.

    .venv/bin/python scripts/experiments/profile_stages.py --size 288 \
        --out benchmarks/reports/profile/stages_288.json

Weights are ImageNet's (the timing of a convolution does not depend on its values). Issue
#33's profile (benchmarks/reports/profile/README.md) was made with this script: at commit
78d5e81 for the earlier architecture (--work-size 288: a 224-px input, the full-resolution
mask, a resize inside the model), after it for the bundled one (--size 288: a 288-px input,
the mask on block means, no resize).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

WEIGHTS = "../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"


def stage_models(work_size: int, image_size: int = 224) -> dict:
    """Prefix models of the bundled architecture, cheapest first."""
    import keras

    from hemalite.convert.export import export_model
    from hemalite.train.model import build_mobilenet

    model, backbone, _ = build_mobilenet(4, image_size, 1.0, WEIGHTS, ground=True,
                                         work_size=work_size)
    layers = {layer.name: layer for layer in model.layers}
    pixels = keras.Input((image_size, image_size, 3), name="image")
    grounded = layers["ground"](pixels)
    resized = layers["resize"](grounded) if "resize" in layers else grounded
    pooled = backbone(layers["scale"](resized))
    rng = np.random.default_rng(0)
    projection = (rng.normal(0, 0.05, (backbone.output_shape[-1], 64)).astype(np.float32),
                  np.zeros(64, np.float32))
    stages = {"mask (Ground layer)": keras.Model(pixels, grounded)}
    if "resize" in layers:
        stages["mask + resize"] = keras.Model(pixels, resized)
    stages["mask (+ resize) + backbone"] = keras.Model(pixels, pooled)
    stages["whole model (all outputs)"] = export_model(model, projection)
    raw = keras.Input((work_size, work_size, 3), name="image")
    stages["backbone alone (its own input size)"] = keras.Model(
        raw, backbone(layers["scale"](raw)))
    return stages


def calibration(image_size: int, n: int = 40) -> np.ndarray:
    from hemalite.contract import InputSpec, load_image, preprocess

    files = sorted(Path("../shared/data/all4").glob("*/*.jpg"))[::50][:n]
    return np.stack([preprocess(load_image(f), InputSpec(image_size, image_size))
                     for f in files])


def median_invoke_ms(flat: bytes, threads: int, runs: int = 100, warmup: int = 10) -> float:
    """hemalite bench's measurement (benchmarks.measure.invoke_latency) on a bare flatbuffer:
    these sub-graphs carry no labels, so the edge loader would refuse them."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).integers(0, 256, d["shape"], dtype=np.uint8)
    it.set_tensor(d["index"], x.astype(d["dtype"]))
    for _ in range(warmup):
        it.invoke()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        it.invoke()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=288, help="the model's input side")
    parser.add_argument("--work-size", type=int, default=None,
                        help="the backbone's side, if a resize inside the model differs")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=None, help="write the table as JSON here too")
    args = parser.parse_args()

    from hemalite.convert.export import convert_variant, export_saved_model

    work = args.work_size or args.size
    rows = []
    for name, model in stage_models(work, args.size).items():
        x = calibration(model.input_shape[1])
        with tempfile.TemporaryDirectory() as tmp:
            export_saved_model(model, tmp)
            flats = {v: convert_variant(tmp, v, x) for v in ("float32", "int8")}
        row = {"stage": name}
        for variant, flat in flats.items():
            for t in args.threads:
                row[f"{variant}_{t}t_ms"] = median_invoke_ms(flat, t)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"size": args.size, "work_size": work, "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
