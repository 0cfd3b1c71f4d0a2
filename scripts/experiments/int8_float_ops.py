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


def probabilities(flat: bytes, images: np.ndarray) -> np.ndarray:
    """Dequantised probabilities; an int8 input (left when the first op stays float) takes
    the pixels shifted by 128, which is what its scale 1 / zero point -128 means."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flat, num_threads=2)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for img in images:
        x = img[None]
        if inp["dtype"] == np.int8:
            x = (x.astype(np.int16) - 128).astype(np.int8)
        elif inp["dtype"] == np.float32:
            x = x.astype(np.float32)
        it.set_tensor(inp["index"], x)
        it.invoke()
        p = it.get_tensor(out["index"])[0].astype(np.float32)
        scale, zero = out["quantization"]
        rows.append((p - zero) * scale if scale else p)
    return np.array(rows)


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
    ref = [probabilities(reference, s).argmax(1) for s in sets]
    print(f"float32: as is {100 * (ref[0] == y).mean():.1f} %, mean of the shifts "
          f"{np.mean([100 * (r == y).mean() for r in ref[1:]]):.2f} %")
    for label, keys in FLOAT_SETS.items():
        flat = quantise(calibrated, [n for n in names if any(k in n for k in keys)])
        top = [probabilities(flat, s).argmax(1) for s in sets]
        agree = [(t == r).mean() for t, r in zip(top, ref)]
        acc = [100 * (t == y).mean() for t in top]
        print(f"{label:30s} {len(flat):>9,} B  agreement as is {agree[0]:.4f}, shifted "
              f"{np.mean(agree[1:]):.4f}; accuracy as is {acc[0]:.1f} %, mean of the shifts "
              f"{np.mean(acc[1:]):.2f} %", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
