"""Validation shifts in int8: the bundled int8 file (W), a crops run (cell_crops.py) converted
to int8, and the two averaged, as `cell_crops.py --evaluate-only --with` does in Keras float.
An experiment, not part of hemalite; reads the train split (calibration) and validation only.

    .venv/bin/python scripts/experiments/crops_int8.py runs/crops4
"""
import sys, json
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))  # cell_crops.py
import numpy as np, keras, tensorflow as tf
import cell_crops as cc
from hemalite import shifts
from hemalite.convert.export import load_run
from hemalite.train import data
from hemalite.edge.runtime import default_model_path, load_model
from ai_edge_litert.interpreter import Interpreter

out = Path(sys.argv[1])
cc.CROP, cc.SIZE = json.loads((out / "geometry.json").read_text()).values()
model = keras.models.load_model(out / "model.keras", compile=False)
split = load_run("runs/cellsS")
xt, yt, _ = data.load_pixels(split.data_dir, split.samples("train")[::20], split.spec, progress=False)
calib, _, _ = cc.crops_of(xt, yt, 4)
conv = tf.lite.TFLiteConverter.from_keras_model(model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = lambda: ([c[None].astype(np.float32)] for c in calib)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.uint8; conv.inference_output_type = tf.uint8
it = Interpreter(model_content=conv.convert(), num_threads=2); it.allocate_tensors()
i_d, o_d = it.get_input_details()[0], it.get_output_details()[0]
s, z = o_d["quantization"]

class Int8Crops:
    def predict(self, xs, **_):
        res = []
        for c in xs:
            it.set_tensor(i_d["index"], c[None].astype(np.uint8)); it.invoke()
            res.append((it.get_tensor(o_d["index"])[0].astype(np.float32) - z) * s)
        return np.stack(res)

w = load_model(Path(default_model_path()))  # bundled int8
x, y, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, progress=False)
cases = [("as is", None)] + [(shifts.shift_name(n, v), (n, v)) for n, v in shifts.AUDIT_SHIFTS]
rows = {"crops": [], "whole": [], "both": []}
for name, shift in cases:
    xs = x if shift is None else np.stack([shifts.apply_shift(img, *shift) for img in x])
    pc, none, _ = cc.image_probs(Int8Crops(), xs, y, 4)
    pw = np.stack([w.predict(img) for img in xs])
    for k, p in (("crops", pc), ("whole", pw), ("both", pc + pw)):
        rows[k].append(100 * float(cc.right(p, y).mean()))
    print(f"{name:18s} " + "  ".join(f"{k} {v[-1]:5.1f}" for k, v in rows.items()), flush=True)
for k, v in rows.items():
    print(f"{k} int8: as is {v[0]:.1f}, mean of 12 {np.mean(v[1:]):.2f}, worst {min(v[1:]):.1f}")
