"""What a narrower backbone would save (issue #33): the hemalite graph (Ground, MobileNetV2 at
`alpha`, head, domain / cam / embedding outputs) built with random weights, converted to int8
with random calibration images (the timing does not depend on the values), then timed with
LiteRT at 1 and 2 threads next to the bundled model. Alpha 1.0 reproduces the bundled file's
invoke time, which is what makes the others comparable.

    .venv/bin/python scripts/experiments/width_latency.py 0.5 [288]   # writes /tmp/width/a0.5_288.tflite
    .venv/bin/python scripts/experiments/width_latency.py --time hemalite/models/hemalite_int8.tflite /tmp/width/*.tflite
"""
import os
import sys
import time

import numpy as np


def time_invoke(paths) -> None:
    """Median of 40 invokes after 5 warm-ups, at 1 and 2 threads, per file."""
    from ai_edge_litert.interpreter import Interpreter

    for path in paths:
        res = []
        for threads in (1, 2):
            it = Interpreter(model_path=path, num_threads=threads)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            it.set_tensor(inp["index"], np.random.randint(0, 256, inp["shape"]).astype(inp["dtype"]))
            for _ in range(5):
                it.invoke()
            t = []
            for _ in range(40):
                s = time.perf_counter()
                it.invoke()
                t.append(time.perf_counter() - s)
            res.append(f"{threads} thread(s) {np.median(t) * 1e3:.2f} ms")
        print(path, *res, flush=True)


if sys.argv[1] == "--time":
    time_invoke(sys.argv[2:])
    sys.exit()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from hemalite.train.model import build_mobilenet  # noqa: E402  (TensorFlow only to build)
from hemalite.convert.export import export_model, export_saved_model, convert_variant  # noqa
alpha = float(sys.argv[1])
size = int(sys.argv[2]) if len(sys.argv) > 2 else 288
os.makedirs("/tmp/width", exist_ok=True)
model, backbone, head = build_mobilenet(4, size, alpha, "none")
d = backbone.output_shape[-1]
proj = (np.random.randn(d, 64).astype(np.float32) * 0.01, np.zeros(64, np.float32))
m = export_model(model, proj)
out = f"/tmp/width/a{alpha}_{size}"
export_saved_model(m, out)
calib = np.random.randint(0, 256, (20, size, size, 3)).astype(np.uint8)
data = convert_variant(out, "int8", calib)
open(out + ".tflite", "wb").write(data)
print(out + ".tflite", len(data) / 1e6, "MB")
