"""Heatmap mass of a .tflite that has no `cam` output (models made before hemalite 0.2).

The class-activation map is still in the file: the last 4-D feature tensor times the
fully-connected head's weights. LiteRT keeps intermediate tensors readable with
`experimental_preserve_all_tensors`, so this reads both and measures, on a manifest's images,
the share of the predicted class's positive map that falls on the leukocyte mask.

    python -m hemalite.benchmarks.legacy_cam MODEL.tflite MANIFEST.csv DATA_ROOT
"""
from __future__ import annotations

import sys

import numpy as np

from hemalite.contract import load_batch
from hemalite.edge import sources
from hemalite.edge.assess import heatmap_mass, leukocyte_region
from hemalite.edge.runtime import load_runtime, quantise
from hemalite.metadata import read_model_info


def legacy_cams(path: str, images: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(predicted class, (rows, cols, classes) map) per image, from preserved tensors."""
    interpreter_cls, _, _ = load_runtime()
    it = interpreter_cls(model_path=path, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    details = it.get_tensor_details()
    maps = [d for d in details if len(d["shape"]) == 4 and d["shape"][-1] >= 512]
    feature = max(maps, key=lambda d: d["index"])  # the last wide feature map
    classes = it.get_output_details()[0]["shape"][-1]
    kernel = next(d for d in details if list(d["shape"]) == [classes, feature["shape"][-1]])
    weights = _dequantised(it, kernel)
    out = []
    for image in images:
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], quantise(image[None], d["dtype"], *d["quantization"]))
        it.invoke()
        fmap = _dequantised(it, feature)[0]
        probs = it.get_tensor(it.get_output_details()[0]["index"])[0]
        out.append((int(np.argmax(probs)), fmap @ weights.T))
    return out


def _dequantised(it, detail) -> np.ndarray:
    value = it.get_tensor(detail["index"]).astype(np.float32)
    scales = detail["quantization_parameters"]["scales"]
    zeros = detail["quantization_parameters"]["zero_points"]
    if len(scales) == 0:
        return value
    axis = detail["quantization_parameters"]["quantized_dimension"]
    shape = [1] * value.ndim
    shape[axis] = -1
    return (value - zeros.reshape(shape)) * scales.reshape(shape)


def main(model: str, manifest: str, root: str) -> None:
    spec = read_model_info(model).spec
    images, _, _ = load_batch(sources.manifest_paths(manifest, root), spec)
    masses, areas = [], []
    for image, (label, cam) in zip(images, legacy_cams(model, images)):
        region = leukocyte_region(image)
        mass = heatmap_mass(cam, label, region)
        if mass is not None:
            masses.append(mass)
            areas.append(region.mean())
    print(f"{model}: heatmap mass on leukocytes {np.mean(masses):.3f} for a leukocyte area "
          f"share of {np.mean(areas):.3f} ({len(masses)} images)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
