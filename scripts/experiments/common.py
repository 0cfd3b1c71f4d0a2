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
