"""Shared fixtures: tiny generated class-folder datasets and tiny real models.

The edge tests use tests/data/tiny_int8.tflite, committed, so that they run on an
edge-only install with no TensorFlow (`make test-edge`; `make tiny-models` remakes it).
The train, convert and bench tests train a real MobileNetV2 (alpha 0.35, random init,
32 px) through the real `train()` once per session and convert it to every variant; they
skip, with the reason, where TensorFlow is not installed.

`pytest --runtime NAME` runs every test with that TFLite runtime (HEMALITE_RUNTIME, so child
processes use it too) and fails at once when it is not installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data" / "all4"
IMAGENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}
TINY_SIZE = 32
TINY_INT8 = Path(__file__).resolve().parent / "data" / "tiny_int8.tflite"
NEEDS_TENSORFLOW = "needs TensorFlow (pip install '.[train]'); the edge tests do not"


def pytest_addoption(parser):
    parser.addoption("--runtime", default=None,
                     help="TFLite runtime for every test: ai_edge_litert, tflite_runtime or "
                          "tensorflow (sets HEMALITE_RUNTIME)")


def pytest_configure(config):
    name = config.getoption("--runtime")
    if name:
        from hemalite.edge.runtime import RuntimeNotFound, load_runtime

        try:
            load_runtime(name)
        except RuntimeNotFound as err:
            raise pytest.UsageError(f"--runtime {name}: {err}") from None
        os.environ["HEMALITE_RUNTIME"] = name


def make_dataset(root: Path, per_class: int = 16, size: int = 48, seed: int = 0,
                 colours=COLOURS) -> Path:
    """root/<colour>/img_NNN.png: a solid colour plus Gaussian noise, per class."""
    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 18, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"img_{i:03d}.png")
    return root


def nest(root: Path, subfolders=("sub one", "sub one/deep")) -> Path:
    """Move images of every class folder deeper: root/<class>/sub one/deep/img.png.

    The first image of each class stays where it is, the others go round the sub-folders.
    """
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted(class_dir.glob("*.png"))[1:]):
            target = class_dir / subfolders[i % len(subfolders)]
            target.mkdir(parents=True, exist_ok=True)
            image.rename(target / image.name)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_int8() -> Path:
    """The committed tiny int8 model (uint8 I/O, labels blue/green/red, 32 px)."""
    if not TINY_INT8.is_file():
        pytest.fail(f"{TINY_INT8} is missing: run `make tiny-models`")
    return TINY_INT8


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A real training run of a tiny from-scratch MobileNetV2 (alpha 0.35, 32 px).

    From scratch on purpose: pooled ImageNet features of flat noisy colours are mostly
    texture, and a head on them separated these colours worse than a small net trained
    from scratch (measured while writing these fixtures).
    """
    pytest.importorskip("tensorflow", reason=NEEDS_TENSORFLOW)
    from hemalite.train.fit import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(data_dir=str(tiny_data), out=str(out), weights="none", alpha=0.35,
                      image_size=TINY_SIZE, epochs=12, batch_size=8, learning_rate=1e-2,
                      patience=12, augment=False, ground=False, acquisition=False,
                      progress=False))  # colour squares are not smears: no stain mask
    return out


@pytest.fixture(scope="session")
def tiny_tflite(tiny_run) -> dict[str, Path]:
    """The tiny run converted to all four variants (int8 with uint8 I/O)."""
    from hemalite.convert.convert import VARIANTS, ConvertConfig, convert

    result = convert(ConvertConfig(run_dir=str(tiny_run), variants=VARIANTS, calib_size=32,
                                   threshold=0.0))
    return result["paths"]


def real_images(per_class: int = 2) -> list[Path]:
    """A few real smear images from ../shared (skip the test when the data is absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    return [p for d in sorted(SHARED_DATA.iterdir()) for p in sorted(d.iterdir())[:per_class]]
