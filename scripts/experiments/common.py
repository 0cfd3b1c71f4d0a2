"""What the experiment scripts share: their command line (a split, the sweep run that holds
its manifests, the model, the data) and the split's rows. Scripts import it by name (their
own folder is on sys.path when run as `python scripts/experiments/NAME.py`)."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def arguments(doc: str) -> argparse.ArgumentParser:
    """The parser every split-reading experiment starts from (add its own options)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("split", nargs="?", default="val", help="val or test")
    parser.add_argument("--run", type=Path, default=Path("runs/sweep/size288"),
                        help="the run whose splits/ hold the val (and train) manifests")
    parser.add_argument("--model", default="hemalite/models/hemalite_int8.tflite")
    parser.add_argument("--data", default="../shared/data/all4")
    return parser


def split_rows(split: str, run: Path) -> list[tuple[str, str]]:
    """(path, label) of a split: test is the bundled model's, the others the run's."""
    manifest = ("hemalite/models/test_split.csv" if split == "test"
                else Path(run) / "splits" / f"{split}.csv")
    with open(manifest, newline="") as fh:
        return [(r["path"], r["label"]) for r in csv.DictReader(fh)]


def floor_rows(path: str, check) -> list[dict]:
    """floor.py's per-image CSV, one row per shift and image (blur r1.5 is both an audit
    shift and a fault), each with `limits`: check.nearest_limits of its recorded readings."""
    rows, seen = [], set()
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if (r["shift"], r["path"]) in seen:
                continue
            seen.add((r["shift"], r["path"]))
            measures = {k: float(v) for k, v in r.items() if k in check.ranges}
            for cue in check.size_weights:  # both size cues at the recorded scale give it back
                measures[cue] = check.medians[cue] * measures["scale"]
            r["limits"] = check.nearest_limits(measures)
            rows.append(r)
    return rows


def floor_csv(doc: str, what: str):
    """The command line of a script that reads floor.py's CSV (`what`: which run of it) with
    the bundled model's acquisition check, or --model's: (its rows (floor_rows), the check)."""
    from hemalite.edge.runtime import default_model_path, load_model

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("csv", help=what)
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    check = load_model(args.model).domain.acquisition_check
    return floor_rows(args.csv, check), check
