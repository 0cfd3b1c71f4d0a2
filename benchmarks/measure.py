"""Measurements: size, invoke latency, end-to-end throughput, memory / cold start, accuracy.

Each function measures one thing and returns plain numbers; report.py turns them into text.
Only .tflite models need nothing but the edge install; the Keras reference (accuracy only)
is measured when TensorFlow is importable.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model, load_runtime
from hemalite.metadata import count_parameters


def machine_info() -> dict:
    """What the numbers were measured on: CPU, cores, OS, Python, runtime, governor."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":")[0].strip()
            if key in ("model name", "Model", "Hardware") and ":" in line:
                cpu = line.split(":", 1)[1].strip()
                if key == "model name":
                    break
    except OSError:
        pass
    try:
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        governor = None
    try:
        _, runtime, version = load_runtime()
    except ImportError:
        runtime, version = None, None
    return {"hostname": platform.node(), "cpu": cpu, "architecture": platform.machine(),
            "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "runtime": runtime,
            "runtime_version": version, "governor": governor}


def summarise(samples_s: list[float]) -> dict:
    """mean, std, min, p50, p90, p99 in milliseconds (numpy percentiles)."""
    ms = np.asarray(samples_s) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": int(len(ms)), "mean_ms": float(ms.mean()), "std_ms": float(ms.std()),
            "min_ms": float(ms.min()), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "samples_ms": [round(float(v), 4) for v in ms]}


def invoke_latency(path: str, threads: int, runs: int, warmup: int,
                   pixels: np.ndarray | None = None) -> dict:
    """Warm up, then time `runs` invokes of one fixed input at a given thread count."""
    model = load_model(path, num_threads=threads)
    spec = model.info.spec
    if pixels is None:
        pixels = np.random.default_rng(0).integers(0, 256, (spec.height, spec.width, 3),
                                                   dtype=np.uint8)
    model.set_input(pixels)
    for _ in range(warmup):
        model.invoke()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        model.invoke()
        samples.append(time.perf_counter() - start)
    return summarise(samples)


def end_to_end(path: str, files: list[str], threads: int) -> dict:
    """Images/s over real files, with time split into decode, preprocess, invoke, postprocess."""
    model = load_model(path, num_threads=threads)
    spec, stages = model.info.spec, dict.fromkeys(("decode", "preprocess", "invoke",
                                                   "postprocess"), 0.0)
    start = time.perf_counter()
    for f in files:
        t0 = time.perf_counter()
        rgb = load_image(f, spec)
        t1 = time.perf_counter()
        pixels = preprocess(rgb, spec)
        t2 = time.perf_counter()
        model.set_input(pixels)
        model.invoke()
        t3 = time.perf_counter()
        int(np.argmax(model.get_scores()))
        t4 = time.perf_counter()
        for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name] += dt
    wall = time.perf_counter() - start
    return {"images": len(files), "threads": threads, "seconds": wall,
            "images_per_s": len(files) / wall if wall else None,
            "stage_share": {k: v / wall for k, v in stages.items()},
            "stage_ms_per_image": {k: 1000 * v / len(files) for k, v in stages.items()}}


def cold_start(path: str, image: str, threads: int) -> dict:
    """A fresh process loads the model and classifies one image: wall time and peak RSS."""
    code = ("import time, sys, json; t0 = time.perf_counter(); "
            "from hemalite.benchmarks.probe import probe, peak_rss_mb; "
            "r = probe(sys.argv[1], sys.argv[2], int(sys.argv[3])); "
            "r['in_process_s'] = time.perf_counter() - t0; r['peak_rss_mb'] = peak_rss_mb(); "
            "print(json.dumps(r))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, path, image, str(threads)],
                          capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start  # includes interpreter start-up
    return result


def size(path: str) -> dict:
    data = Path(path).read_bytes()
    return {"bytes": len(data), "params": count_parameters(data)}


def tflite_probabilities(path: str, x: np.ndarray, threads: int) -> np.ndarray:
    return load_model(path, num_threads=threads).predict_batch(x)


def keras_probabilities(path: str, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Probabilities and parameter count of a .keras model (needs TensorFlow)."""
    import keras

    model = keras.models.load_model(path, compile=False)
    return model.predict(x.astype(np.float32), batch_size=32, verbose=0), model.count_params()


def versus_reference(metrics: dict, probs: np.ndarray, ref_metrics: dict,
                     ref_probs: np.ndarray) -> dict:
    """Accuracy drop, top-1 agreement and per-class recall drop against the float reference."""
    return {"accuracy_drop_points": 100 * (ref_metrics["accuracy"] - metrics["accuracy"]),
            "top1_agreement": float((probs.argmax(1) == ref_probs.argmax(1)).mean()),
            "recall_drop_points": {c: 100 * (ref_metrics["per_class"][c]["recall"]
                                             - m["recall"])
                                   for c, m in metrics["per_class"].items()}}
