"""The run directory: what a run leaves there, whether an earlier run in it is this one
(resume), another one (refuse) or to be replaced (--force), the split it trains on, and
the files written before training starts."""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from hemalite import __version__
from hemalite.files import atomic_path, read_json, write_json
from hemalite.train import data

if TYPE_CHECKING:
    from hemalite.train.fit import TrainConfig


def save_keras(model, path: Path) -> None:
    """Save a .keras file atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


# What `hemalite train` (and `hemalite convert`'s default --out) leave in a run directory.
RUN_ARTEFACTS = ("model.keras", "config.json", "labels.txt", "history.json", "metrics.json",
                 "confusion_matrix.png", "splits", "checkpoints", "tflite", "teacher.json")
_NOT_COMPARED = ("out", "progress", "force")  # options that do not change the model


def prepare_run_dir(cfg: TrainConfig) -> bool:
    """Check cfg.out before any work; True when it holds this very run, finished.

    A run directory holds one model and what was made from it. Other options there are
    refused (the old tflite/ would contradict the new model) and so are files without a
    config.json; the same options resume an interrupted run. --force deletes what an
    earlier run left, then trains afresh.
    """
    run = Path(cfg.out)
    present = [name for name in RUN_ARTEFACTS if (run / name).exists()]
    if cfg.force:
        for name in present:
            path = run / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        return False
    if not present:
        return False
    if "config.json" not in present:
        raise data.TrainError(f"{run} already holds {', '.join(present)} from another run: "
                              "use another --out, or --force to replace them")
    old, new = read_json(run / "config.json"), dataclasses.asdict(cfg)
    old["data_dir"] = os.path.abspath(old.get("data_dir", ""))
    new["data_dir"] = os.path.abspath(new["data_dir"])
    changed = [f"--{k.replace('_', '-')} {old[k]} -> {new[k]}" for k in new
               if k not in _NOT_COMPARED and k in old and old[k] != new[k]]
    if changed:
        raise data.TrainError(f"{run} holds a run trained with other options ("
                              + "; ".join(changed) + "): use another --out, or --force to "
                              "replace it")
    return ((run / "model.keras").is_file() and (run / "metrics.json").is_file()
            and not (run / "checkpoints").exists())


def prepare_splits(cfg: TrainConfig):
    """Scan and split (deterministic: a resumed run gets the same split); nothing written."""
    samples, labels, skipped = data.scan_dataset(cfg.data_dir)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    splits, dup_groups = data.split_dataset(samples, fractions, cfg.seed)
    data.check_split(splits, labels, fractions)
    summary = {"images": len(samples), "skipped": skipped, "duplicate_groups": dup_groups,
               **{name: len(splits[name]) for name in data.SPLITS}}
    return splits, labels, summary


def write_run_start(cfg: TrainConfig, run: Path, splits, labels) -> None:
    """config.json (to replay the run), manifests and labels.txt: written once the data and
    the model are known to be good, so a run refused up front leaves nothing behind."""
    import keras
    import tensorflow as tf

    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", {**dataclasses.asdict(cfg), "hemalite": __version__,
                                     "tensorflow": tf.__version__, "keras": keras.__version__})
    for name in data.SPLITS:
        data.write_manifest(run / "splits" / f"{name}.csv", splits[name], labels)
    data.write_labels(run / "labels.txt", labels)
