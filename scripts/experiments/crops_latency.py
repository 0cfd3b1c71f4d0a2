"""One window's invoke time (1 thread, median of 50) of a crops run (cell_crops.py) in float32
and int8 against one image of the bundled files, and the int8 windows' per-image validation
accuracy as is. An experiment, not part of hemalite.

    .venv/bin/python scripts/experiments/crops_latency.py runs/crops2
"""
import sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))  # cell_crops.py
import json
import numpy as np, keras, tensorflow as tf
import cell_crops as cc
from hemalite.convert.export import load_run
from hemalite.train import data
from hemalite.edge.runtime import default_model_path
from ai_edge_litert.interpreter import Interpreter

out = Path(sys.argv[1])
cc.CROP, cc.SIZE = json.loads((out / "geometry.json").read_text()).values()
model = keras.models.load_model(out / "model.keras", compile=False)
split = load_run("runs/cellsS")
xt, yt, _ = data.load_pixels(split.data_dir, split.samples("train")[::20], split.spec, progress=False)
calib, _, _ = cc.crops_of(xt, yt, 4)
xv, yv, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, progress=False)
xc, yc, owner = cc.crops_of(xv, yv, cc.EVAL_CELLS)

def interp(content):
    it = Interpreter(model_content=content, num_threads=1); it.allocate_tensors(); return it

def run(it, x):
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(i["index"], x[None].astype(i["dtype"])); it.invoke()
    y = it.get_tensor(o["index"]).astype(np.float32)[0]
    if o["dtype"] == np.uint8:
        s, z = o["quantization"]; y = (y - z) * s
    return y

def median_ms(it, xs, n=60):
    ts = []
    for k in range(n):
        t = time.perf_counter(); run(it, xs[k % len(xs)]); ts.append(time.perf_counter() - t)
    return 1000 * np.median(ts[10:])

for kind in ("float32", "int8"):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None].astype(np.float32)] for c in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8; conv.inference_output_type = tf.uint8
    blob = conv.convert()
    it = interp(blob)
    probs = np.stack([run(it, c) for c in xc])
    total = np.zeros((len(xv), 4)); np.add.at(total, owner, np.log(np.clip(probs, 1e-7, 1)))
    acc = (total.argmax(1) == yv).mean()
    print(f"{out.name} {kind}: {len(blob)} bytes, one window {median_ms(it, xc):.2f} ms, "
          f"{len(xc) / len(xv):.1f} windows per image, validation per image {100 * acc:.1f} %, "
          f"windows {100 * (probs.argmax(1) == yc).mean():.1f} %", flush=True)
bundled = Path(default_model_path())
for f in (bundled, bundled.with_name("hemalite_float32.tflite")):
    it = interp(f.read_bytes())
    print(f"{f.name}: one image {median_ms(it, xv):.2f} ms", flush=True)
