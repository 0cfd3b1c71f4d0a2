"""The classifier head read out of a .tflite and written back, without TensorFlow: on the
committed tiny models (float32 and int8), through the runtime the edge uses."""
from __future__ import annotations

import numpy as np
import pytest

from hemalite.edge import head as heads
from hemalite.edge.runtime import load_model
from hemalite.metadata import embed_metadata, read_model_info
from tests.helpers import REPO, make_dataset

TINY = {v: REPO / "tests" / "data" / f"tiny_{v}.tflite" for v in ("float32", "int8")}


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[np.ndarray]:
    from PIL import Image

    root = make_dataset(tmp_path_factory.mktemp("head"), per_class=4, size=32)
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(root.rglob("*.png"))]


def outputs(path, images) -> tuple[np.ndarray, np.ndarray]:
    model = load_model(path, 1)
    probs, features = [], []
    for image in images:
        probs.append(model.predict(image))
        features.append(model.get_output("embedding"))
    return np.array(probs), np.array(features)


@pytest.mark.parametrize("variant,atol", [("float32", 1e-5), ("int8", 0.02)])
def test_the_head_read_out_reproduces_the_models_probabilities(images, variant, atol):
    probs, features = outputs(TINY[variant], images)
    head = heads.read_head(TINY[variant].read_bytes())
    assert head.weights.shape == (3, features.shape[1])
    np.testing.assert_allclose(softmax(head.logits(features)), probs, atol=atol)


@pytest.mark.parametrize("variant,atol", [("float32", 1e-5), ("int8", 0.03)])
def test_a_new_head_written_in_is_what_the_model_computes(images, tmp_path, variant, atol):
    raw = TINY[variant].read_bytes()
    old = heads.read_head(raw)
    _, features = outputs(TINY[variant], images)
    rng = np.random.default_rng(0)
    new = heads.Head(old.weights[::-1].copy() + rng.normal(0, 0.1, old.weights.shape)
                     .astype(np.float32), old.bias[::-1].copy() + 0.5)
    path = tmp_path / f"new_{variant}.tflite"
    path.write_bytes(embed_metadata(heads.write_head(raw, new, new.logits(features)),
                                    read_model_info(TINY[variant])))
    probs, same_features = outputs(path, images)
    np.testing.assert_allclose(same_features, features)  # the backbone is untouched
    np.testing.assert_allclose(probs, softmax(new.logits(features)), atol=atol)
    assert (probs.argmax(1) != outputs(TINY[variant], images)[0].argmax(1)).any()
    cam = load_model(path, 1)
    cam.predict(images[0])
    maps = cam.get_output("cam").reshape(-1, 3)  # the maps follow the new head too
    np.testing.assert_allclose(maps.mean(0), new.logits(features[:1])[0],
                               atol=0.05 + 0.1 * np.abs(new.logits(features[:1])).max())


def test_a_head_of_the_wrong_shape_is_one_clear_error():
    raw = TINY["int8"].read_bytes()
    old = heads.read_head(raw)
    with pytest.raises(heads.HeadError, match="does not fit"):
        heads.write_head(raw, heads.Head(old.weights[:2], old.bias[:2]), np.zeros((1, 2)))
