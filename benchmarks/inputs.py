"""What a benchmark measures: the models (from run directories or files) and the labelled
images (a class-folder dataset or a manifest), loaded through preprocess(). No click."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hemalite.contract import load_batch
from hemalite.edge import sources
from hemalite.edge.classify import ground_truth
from hemalite.errors import HemaliteError
from hemalite.metadata import read_model_info


class BenchError(HemaliteError):
    """Nothing to measure: no model, no images, or an option missing (one line)."""

    exit_code = 1


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def collect(targets, data_dir, manifest, data_root, keras_too: bool):
    """Models and images to measure: from a run directory or explicit files."""
    models, run = [], None
    for t in targets:
        p = Path(t)
        if p.is_dir():
            run = p
            models += sorted(str(m) for m in (p / "tflite").glob("*.tflite"))
            if keras_too and (p / "model.keras").is_file():
                models.append(str(p / "model.keras"))
        elif p.is_file() and (p.suffix == ".tflite" or (keras_too and p.suffix == ".keras")):
            models.append(str(p))
        else:
            raise BenchError(f"{t}: not a run directory or a model file"
                             + ("" if keras_too else " (.tflite)"))
    if not models:
        raise BenchError("no models found")
    if not data_dir and not manifest:
        if run is None:
            raise BenchError("give --data DIR or --manifest CSV (or a run directory)")
        manifest = str(run / "splits" / "test.csv")
    if manifest and data_root is None:
        if run is None:
            raise BenchError("--manifest needs --data-root (or a run directory)")
        data_root = json.loads((run / "config.json").read_text())["data_dir"]
    return models, run, manifest, data_root


def load_images(models, data_dir, manifest, data_root, limit, warn=_stderr):
    """Labels from the first .tflite (metadata) or the run; pixels through preprocess().

    (x, y, files, labels, source); `warn` gets a line for images not measured.
    """
    tflites = [m for m in models if m.endswith(".tflite")]
    info = read_model_info(tflites[0]) if tflites else None
    if info is None:
        raise BenchError("at least one .tflite model is needed for labels and input size")
    labels, spec = info.labels, info.spec
    if manifest:
        found = [(path, data_root) for path in sources.manifest_paths(manifest, data_root)]
        source = f"{manifest} (root {data_root})"
    else:
        found = list(sources.find_images([data_dir]))
        source = data_dir
    # the truth is the class folder directly under the root, at any depth, as in training
    labelled = [(path, truth) for path, root in found
                if (truth := ground_truth(path, labels, root)) is not None]
    if len(labelled) < len(found):
        warn(f"warning: {len(found) - len(labelled)} of {len(found)} images are not under "
             f"a folder named after a label {list(labels)}: not measured")
    if limit:
        rng = np.random.default_rng(0)
        labelled = [labelled[i] for i in sorted(rng.permutation(len(labelled))[:limit])]
    if not labelled:
        raise BenchError(f"no images in sub-folders named after the labels {list(labels)}")
    x, kept, failures = load_batch([path for path, _ in labelled], spec)
    for line in failures:
        warn(f"skipped: {line}")
    files = [labelled[i][0] for i in kept]
    y = np.array([labels.index(labelled[i][1]) for i in kept], dtype=int)
    return x, y, files, labels, source
