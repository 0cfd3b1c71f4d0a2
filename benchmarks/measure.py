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
import tempfile
import time
from pathlib import Path

import numpy as np

from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model, load_runtime
from hemalite.metadata import count_parameters


# Instruction sets that decide int8 speed, weakest first. x86: AVX2 has no int8 dot product
# (XNNPACK widens to int16), AVX-VNNI and AVX-512 VNNI add one, AMX multiplies int8 tiles.
# ARM: asimddp is the dot product (Pi 5's Cortex-A76; a Pi 4's A72 has none), i8mm the
# int8 matrix multiply. Names as Linux's /proc/cpuinfo spells them.
INT8_ISA = {"x86_64": ("avx2", "avx_vnni", "avx512_vnni", "amx_int8"),
            "aarch64": ("asimddp", "i8mm")}
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags in /proc/cpuinfo text: 'flags' on x86, 'Features' on ARM."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def int8_isa(architecture: str, flags: set[str]) -> dict[str, bool] | None:
    """{instruction set: present} for the architecture's int8-relevant sets (None: unknown)."""
    names = INT8_ISA.get(ARCH_ALIASES.get(architecture, architecture))
    return {n: n in flags for n in names} if names and flags else None


def emulation(machine: str, kernel_arch_file: str = "/proc/sys/kernel/arch") -> str | None:
    """Say so when this process runs under user-mode emulation (qemu-aarch64 on x86_64).

    The kernel's own architecture differs from the one uname reports to the process then;
    a 32-bit userland on its 64-bit kernel is native, not emulated.
    """
    try:
        kernel = Path(kernel_arch_file).read_text().strip()
    except OSError:
        return None
    native = {kernel, *{"x86_64": ("i386", "i686"), "aarch64": ("armv7l", "armv8l")}.get(
        kernel, ())}
    if machine in native:
        return None
    cpu = os.environ.get("QEMU_CPU")
    return f"{machine} on {kernel}" + (f" (QEMU_CPU={cpu})" if cpu else "")


def machine_info() -> dict:
    """What the numbers were measured on: CPU and its int8 instruction sets, cores, OS,
    Python, runtime, governor, and whether the CPU was emulated."""
    cpu = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key = line.split(":")[0].strip()
        if key in ("model name", "Model", "Hardware") and ":" in line:
            cpu = line.split(":", 1)[1].strip()
            if key == "model name":
                break
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
            "runtime_version": version, "governor": governor,
            "int8_isa": int8_isa(platform.machine(), cpu_flags(cpuinfo)),
            "emulated": emulation(platform.machine())}


def machine_kind(machine: dict) -> str:
    """A report folder name for the machine: architecture and its best int8 instruction set
    (x86_64-avx2, x86_64-avx512_vnni, aarch64-asimddp), with -emulated when it was."""
    isa = machine.get("int8_isa") or {}
    present = [n for n in INT8_ISA.get(ARCH_ALIASES.get(machine["architecture"],
                                                         machine["architecture"]), ())
               if isa.get(n)]
    return "-".join([machine["architecture"], *present[-1:]]
                    + (["emulated"] if machine.get("emulated") else []))


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
    # In a neutral folder: `python -c` puts its working folder first on sys.path, and run
    # from a hemalite checkout that shadows the installed package (no hemalite.benchmarks).
    proc = subprocess.run([sys.executable, "-c", code, os.path.abspath(path),
                           os.path.abspath(image), str(threads)],
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start  # includes interpreter start-up
    return result


def size(path: str) -> dict:
    data = Path(path).read_bytes()
    return {"bytes": len(data), "params": count_parameters(data)}


def tflite_probabilities(path: str, x: np.ndarray, threads: int) -> np.ndarray:
    return load_model(path, num_threads=threads).predict_batch(x)


def keras_file_probabilities(path: str, x: np.ndarray) -> tuple[np.ndarray, int]:
    """Probabilities and parameter count of a .keras model (needs TensorFlow). A run's model
    holds hemalite's own layers (the stain mask, the resize): importing hemalite.train.model
    registers them, the one arrow from benchmarks to train, taken only on this Keras path."""
    import keras

    import hemalite.train.model  # noqa: F401  registers Ground and Resize for loading

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
