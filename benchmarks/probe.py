"""The smallest real job for cold-start and memory measurement: load, classify one image."""
from __future__ import annotations

from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


def probe(model_path: str, image_path: str, threads: int) -> dict:
    model = load_model(model_path, num_threads=threads)
    scores = model.predict(preprocess(load_image(image_path, model.info.spec), model.info.spec))
    return {"label": model.info.labels[int(scores.argmax())], "runtime": model.runtime}
