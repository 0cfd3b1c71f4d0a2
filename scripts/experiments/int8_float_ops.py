"""Where does int8 lose the shifted images? Selective quantisation: some ops left in float.

    .venv/bin/python scripts/experiments/int8_float_ops.py runs/cellsF

Converts the run's probability head four ways from one calibration (hemalite convert's: 300
training images, half jittered): all int8; the Ground layer (the stain mask) in float; the
two, and the six, pointwise projections one TFLite QuantizationDebugger run on the session-4
model ranked worst (largest RMSE / scale on 65 jittered validation images; hard-coded below)
in float. Prints each one's top-1 agreement with
the float32 model and accuracy, on the validation split as is and under the audit's shifts.
An experiment, not part of hemalite (the `mlir_quantize` call is TensorFlow-internal).
"""
from __future__ import annotations

import sys
import tempfile

import numpy as np

from hemalite import shifts
from hemalite.convert.export import (ConvertConfig, calibration_images, export_model,
                                     export_saved_model, load_run, make_converter)
from hemalite.convert.study import int8_probabilities  # metadata on, then the edge runtime
from hemalite.train import data

FLOAT_SETS = {
    "all int8": (),
    "Ground in float": ("/ground_1/",),
    "2 worst projections in float": ("block_13_project_BN", "block_16_project_BN"),
    "6 worst projections in float": tuple(f"block_{i}_project_BN" for i in (6, 10, 13, 14, 15, 16)),
}


def op_outputs(flat: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat)
    names = {d["index"]: d["name"] for d in it.get_tensor_details()}
    return [names[op["outputs"][0]] for op in it._get_ops_details()]


def quantise(calibrated: bytes, denylist: list[str]) -> bytes:
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfconvert

    return tfconvert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=tf.uint8,
                                   output_data_type=tf.uint8, denylisted_nodes=denylist or None)


def main(run_dir: str) -> None:
    run = load_run(run_dir)
    calib, _ = calibration_images(run, ConvertConfig(run_dir=run_dir))
    x, y, _ = data.load_pixels(run.data_dir, run.samples("val"), run.spec, progress=False)
    sets = [x] + [np.stack([shifts.apply_shift(i, n, v) for i in x])
                  for n, v in shifts.AUDIT_SHIFTS]
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(export_model(run.model, None), tmp)
        reference = make_converter(tmp, "float32").convert()
        converter = make_converter(tmp, "int8", calib)
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True
        calibrated = converter.convert()
        names = op_outputs(reference)

        def top1(flat: bytes) -> list[np.ndarray]:
            # an input left int8 (first op in float) has scale 1, zero point -128: the runtime's
            # quantise() maps the pixels onto it as onto a uint8 input
            return [int8_probabilities(run, flat, s, tmp).argmax(1) for s in sets]

        ref = top1(reference)
        print(f"float32: as is {100 * (ref[0] == y).mean():.1f} %, mean of the shifts "
              f"{np.mean([100 * (r == y).mean() for r in ref[1:]]):.2f} %")
        for label, keys in FLOAT_SETS.items():
            flat = quantise(calibrated, [n for n in names if any(k in n for k in keys)])
            top = top1(flat)
            agree = [(t == r).mean() for t, r in zip(top, ref)]
            acc = [100 * (t == y).mean() for t in top]
            print(f"{label:30s} {len(flat):>9,} B  agreement as is {agree[0]:.4f}, shifted "
                  f"{np.mean(agree[1:]):.4f}; accuracy as is {acc[0]:.1f} %, mean of the shifts "
                  f"{np.mean(acc[1:]):.2f} %", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
