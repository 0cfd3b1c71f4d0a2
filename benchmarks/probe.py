"""The smallest real job for cold-start and memory measurement: load, classify one image."""
from __future__ import annotations

from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


def probe(model_path: str, image_path: str, threads: int) -> dict:
    model = load_model(model_path, num_threads=threads)
    scores = model.predict(preprocess(load_image(image_path, model.info.spec), model.info.spec))
    return {"label": model.info.labels[int(scores.argmax())], "runtime": model.runtime}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux: VmHWM from /proc, which starts afresh at exec. (getrusage's ru_maxrss would
    carry over the parent's peak through fork: a benchmark run under TensorFlow then
    reported 1.6 GB for a 66 MB process.)
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
