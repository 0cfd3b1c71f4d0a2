"""Class-folder datasets: scan, group duplicates, split, write manifests, load pixels.

No TensorFlow here: these functions are plain Python + numpy so they are quick to test.
"""
from __future__ import annotations

import csv
import hashlib
import os
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemalite.contract import InputSpec, is_image_name, load_batch
from hemalite.errors import HemaliteError
from hemalite.files import atomic_path, write_text

SPLITS = ("train", "val", "test")


class TrainError(HemaliteError):
    """A user error in the train stage: printed as one line, no traceback."""


class DatasetError(TrainError):
    """A dataset folder that cannot be trained on (one clear line for the user)."""


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset root, '/'-separated
    label: int
    digest: str  # sha256 of the file bytes: byte-identical files share it


def check_label(name: str) -> None:
    """Refuse a class-folder name that would not survive as one line of labels.txt.

    Labels travel as lines (labels.txt in the run and inside every .tflite, whose readers
    strip each line) and as UTF-8: spaces inside a name are fine, line breaks, control
    characters, leading or trailing spaces and undecodable bytes are not.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(f"class folder {name.encode('utf-8', 'surrogateescape')!r} is not "
                           "valid UTF-8: rename it (it becomes a label)") from None
    if name != name.strip() or any(unicodedata.category(ch) == "Cc" for ch in name):
        raise DatasetError(f"class folder {name!r} starts or ends with a space or holds a "
                           "control character: rename it (it becomes a label, one per line)")


def write_labels(path: str | os.PathLike, labels) -> None:
    """labels.txt: one label per line, in output order."""
    write_text(path, "\n".join(labels) + "\n")


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """Read labels.txt: labels are whole lines (a label may contain spaces)."""
    return tuple(line for line in Path(path).read_text(encoding="utf-8").splitlines() if line)


def scan_dataset(root: str | os.PathLike) -> tuple[list[Sample], tuple[str, ...], list[str]]:
    """List the images under root/<class>/ ; labels are the sorted class-folder names.

    Returns (samples, labels, skipped) where skipped names each non-image file. Raises
    DatasetError for a missing or empty folder, a class with no images, or a single class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    labels = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()
                          and not d.name.startswith(".")))
    if not labels:
        raise DatasetError(f"{root} has no class sub-folders (expected {root}/<class>/<image>)")
    if len(labels) < 2:
        raise DatasetError(f"{root} has a single class ({labels[0]}): need at least two")
    for label in labels:
        check_label(label)
    samples, skipped = [], []
    for index, label in enumerate(labels):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / label):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath, name)
                rel = full.relative_to(root).as_posix()
                if not is_image_name(name) or not full.is_file():
                    skipped.append(f"{rel}: not an image file")
                    continue
                samples.append(Sample(rel, index, hashlib.sha256(full.read_bytes()).hexdigest()))
                found += 1
        if not found:
            raise DatasetError(f"class folder '{label}' has no images")
    return samples, labels, skipped


def split_dataset(samples: list[Sample], fractions=(0.8, 0.1, 0.1),
                  seed: int = 42) -> tuple[dict[str, list[Sample]], int]:
    """Stratified train/val/test split by class, keeping byte-identical files together.

    Duplicates are grouped by digest and a group is assigned as a whole, so no image can
    be trained on and tested on under another name. Returns (splits, duplicate_groups).
    Each class's groups are placed by place_groups.
    """
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.digest].append(s)
    duplicate_groups = sum(1 for g in groups.values() if len(g) > 1)
    by_class: dict[int, list[list[Sample]]] = defaultdict(list)
    for digest in sorted(groups):
        by_class[groups[digest][0].label].append(groups[digest])
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        class_groups = by_class[label]
        order = [class_groups[i] for i in rng.permutation(len(class_groups))]
        for group, part in zip(order, place_groups([len(g) for g in order], fractions)):
            splits[SPLITS[part]].extend(group)
    for name in SPLITS:
        splits[name].sort(key=lambda s: s.path)
    return splits, duplicate_groups


def place_groups(sizes: list[int], fractions) -> list[int]:
    """The split (0 train, 1 val, 2 test) of each of one class's groups, in shuffled order.

    First by files: a group goes where the files before it put the running count, so the
    shares hold in files. A group of duplicates can straddle a whole share (14 files, 10
    distinct: a pair at files 11-12 covers validation's 11.2-12.6), leaving it empty; then,
    and only then, the class is placed by distinct images instead: its groups of duplicates
    first, each group counted once, so the last distinct images (single files where there
    are enough) go to validation and test. Every class with smallest_class(fractions)
    distinct images thus gets a validation image, and a class the first rule serves keeps
    its placement (the bundled model's split, and a run being resumed, stay as they were).
    """
    def walk(counts) -> list[int]:
        targets = np.cumsum(fractions)[:-1] * sum(counts)
        starts = np.cumsum([0, *counts[:-1]])
        return [int(np.searchsorted(targets, start, side="right")) for start in starts]

    by_files = walk(sizes)
    by_distinct = walk([1] * len(sizes))  # the parts a class of single files would get
    if set(by_files) >= set(by_distinct):
        return by_files
    order = sorted(range(len(sizes)), key=lambda i: sizes[i] == 1)  # stable: shuffled order
    parts = [0] * len(sizes)
    for i, part in zip(order, by_distinct):
        parts[i] = part
    return parts


def smallest_class(fractions) -> int | None:
    """The fewest distinct images a class needs for split_dataset to give it at least one
    training and one validation image (None when the validation fraction is 0)."""
    for n in range(1, 1001):
        targets = np.cumsum(fractions)[:-1] * n
        parts = {int(np.searchsorted(targets, count, side="right")) for count in range(n)}
        if {0, 1} <= parts:
            return n
    return None


def check_split(splits: dict[str, list[Sample]], labels, fractions) -> None:
    """Refuse a split where a class has no training or no validation image, naming it and
    counting its distinct images (what smallest_class counts) beside its files."""
    for index, label in enumerate(labels):
        counts = {name: sum(s.label == index for s in part) for name, part in splits.items()}
        if counts["train"] and counts["val"]:
            continue
        need = smallest_class(fractions)
        files = sum(counts.values())
        distinct = len({s.digest for part in splits.values() for s in part if s.label == index})
        have = f"{distinct} distinct images" + (f" ({files} files)" if files != distinct else "")
        raise DatasetError(
            f"class '{label}' has {have}: too few to split into train "
            f"and validation (" + (f"at least {need} distinct images per class with "
                                   f"--val-fraction {fractions[1]:g} --test-fraction "
                                   f"{fractions[2]:g})" if need else "--val-fraction is 0)"))


def write_manifest(path: str | os.PathLike, samples: list[Sample], labels) -> None:
    """CSV with path (relative to the dataset root), label name and sha256."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "sha256"])
        for s in samples:
            writer.writerow([s.path, labels[s.label], s.digest])


def read_manifest(path: str | os.PathLike, labels) -> list[Sample]:
    """Read a manifest written by write_manifest (labels give the class index)."""
    index = {name: i for i, name in enumerate(labels)}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    unknown = sorted({r["label"] for r in rows} - set(index))
    if unknown:
        raise DatasetError(f"{path}: labels {unknown} are not among {list(labels)}")
    return [Sample(r["path"], index[r["label"]], r.get("sha256", "")) for r in rows]


def load_pixels(root: str | os.PathLike, samples: list[Sample], spec: InputSpec,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pixels and labels of samples under root; undecodable files are named, not fatal."""
    from tqdm import tqdm

    paths = tqdm([Path(root, s.path) for s in samples], desc="loading images", unit="img",
                 disable=not progress)
    x, kept, failures = load_batch(paths, spec)
    return x, np.array([samples[i].label for i in kept], dtype=int), failures
