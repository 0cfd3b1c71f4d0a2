"""Does MediaPipe's ImageClassifier load a hemalite .tflite and agree with edge-classify?

    python3 -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe
    /tmp/mp/bin/python scripts/experiments/mediapipe_check.py hemalite/models/hemalite_int8.tflite
    .venv-edge/bin/edge-classify $(cat mediapipe_files.txt) --jsonl ec.jsonl --quiet
    python3 scripts/experiments/mediapipe_check.py --compare mediapipe.json ec.jsonl

MediaPipe reads the first output (`probability`) and the labels from the file's TFLite
metadata; it resizes on its own and applies neither the zoom of a calibrated file nor the
REFER checks. Session 14: the bundled int8 model and a site-calibrated file both load; on
every 130th all4 image (21) MediaPipe's top-1 equals edge-classify's, probabilities at
most 0.078 apart. MediaPipe is not a hemalite dependency: run it in a venv of its own.
"""
from __future__ import annotations

import argparse
import glob
import json


def classify(model: str, data: str) -> None:
    import mediapipe as mp
    from mediapipe.tasks import python as tasks
    from mediapipe.tasks.python import vision

    options = vision.ImageClassifierOptions(
        base_options=tasks.BaseOptions(model_asset_path=model), max_results=1)
    classifier = vision.ImageClassifier.create_from_options(options)
    files = sorted(glob.glob(f"{data}/*/*.jpg"))[::130]
    out = {}
    for path in files:
        top = classifier.classify(mp.Image.create_from_file(path)).classifications[0].categories[0]
        out[path] = [top.category_name, top.score]
    classifier.close()
    json.dump(out, open("mediapipe.json", "w"), indent=1)
    open("mediapipe_files.txt", "w").write("\n".join(files) + "\n")
    print(f"{len(out)} images classified: mediapipe.json (their paths: mediapipe_files.txt)")


def compare(mediapipe_json: str, jsonl: str) -> None:
    theirs = json.load(open(mediapipe_json))
    ours = {d["source"]: d["top"][0] for d in map(json.loads, open(jsonl))}
    same = sum(theirs[f][0] == ours[f][0] for f in theirs)
    apart = max(abs(theirs[f][1] - ours[f][1]) for f in theirs)
    print(f"top-1 the same on {same} of {len(theirs)}; probabilities at most {apart:.3f} apart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", default="../shared/data/all4")
    parser.add_argument("--compare", nargs=2, metavar=("MEDIAPIPE_JSON", "EDGE_JSONL"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    else:
        classify(args.model, args.data)


if __name__ == "__main__":
    main()
