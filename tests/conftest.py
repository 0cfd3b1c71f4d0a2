"""Shared fixtures: tiny generated class-folder datasets and tiny real models (the helpers
they are made with live in tests/helpers.py).

The edge tests use tests/data/tiny_int8.tflite, committed, so that they run on an
edge-only install with no TensorFlow (`make test-edge`; `make tiny-models` remakes it).
The train, convert and bench tests train a real MobileNetV2 (alpha 0.35, random init,
32 px) through the real `train()` once per session and convert it to every variant; they
skip, with the reason, where TensorFlow is not installed: every test that needs it carries
the `tensorflow` marker.

`pytest --runtime NAME` runs every test with that TFLite runtime (HEMALITE_RUNTIME, so child
processes use it too) and fails at once when it is not installed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import HAS_TENSORFLOW, NEEDS_TENSORFLOW, TINY_INT8, TINY_SIZE, make_dataset

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked `tensorflow`, with the reason, where TensorFlow is missing."""
    if HAS_TENSORFLOW:
        return
    skip = pytest.mark.skip(reason=NEEDS_TENSORFLOW)
    for item in items:
        if item.get_closest_marker("tensorflow"):
            item.add_marker(skip)


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
    from hemalite.convert.export import VARIANTS, ConvertConfig, convert

    result = convert(ConvertConfig(run_dir=str(tiny_run), variants=VARIANTS, calib_size=32,
                                   threshold=0.0))
    return result["paths"]
