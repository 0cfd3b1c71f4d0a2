"""The recipe's two phases, each resumable: the head on cached features of the frozen
backbone, then the model end to end on augmented images (the single phase without
pretrained weights), with fine-tuning's consistency or distillation loss.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hemalite.files import atomic_path, write_json
from hemalite.train import datasets, multiworker
from hemalite.train.callbacks import epoch_callbacks

if TYPE_CHECKING:
    from hemalite.train.fit import TrainConfig

log = logging.getLogger(__name__)


def fit_head(cfg: TrainConfig, run: Path, model, head, pixels: dict, eval_batch: dict,
             weights: dict, strategy) -> dict:
    """Phase 1: the head on cached features of the frozen backbone; its history.

    Checkpointed as a whole (head weights and history): a resumed run skips it."""
    import keras

    from hemalite.train.model import feature_extractor

    head_path = run / "checkpoints" / "head.weights.h5"
    head_history = run / "checkpoints" / "head_history.json"
    if head_path.exists() and head_history.exists():
        head.load_weights(head_path)
        log.info("resuming: head weights from %s", head_path)
        return json.loads(head_history.read_text())
    verbose = 1 if cfg.progress else 0
    extractor = feature_extractor(model)
    feats = {s: extractor.predict(pixels[s][0].astype("float32"), batch_size=eval_batch[s],
                                  verbose=verbose)
             for s in ("train", "val")}
    with strategy.scope():
        head.compile(keras.optimizers.Adam(cfg.learning_rate),
                     "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = head.fit(feats["train"], pixels["train"][1],
                    validation_data=(feats["val"], pixels["val"][1]), epochs=cfg.epochs,
                    batch_size=cfg.batch_size, class_weight=weights,
                    callbacks=epoch_callbacks(cfg, None), verbose=verbose)
    history = history_of(hist)
    with atomic_path(head_path) as tmp:
        head.save_weights(tmp)
    write_json(head_history, history)
    return history



def fit_end_to_end(cfg: TrainConfig, run: Path, model, pixels: dict, eval_batch: dict,
                   weights: dict, strategy, epochs: int, lr: float, extra_callbacks,
                   soft=None) -> dict:
    """Phase 2 (or the single phase): the whole model on augmented images, resumable after
    an interruption (BackupAndRestore); its history, read from the per-epoch CSV log.

    `soft`: the teacher's probabilities for each training image (teacher_targets), learnt
    beside the labels under the same jitter (distillation_loss)."""
    import keras

    (x_tr, y_tr), (x_va, y_va) = pixels["train"], pixels["val"]
    aug = datasets.augmenter(cfg.randomness_seed) if cfg.augment else None
    drop = multiworker.leaves_replica_empty(len(x_tr) % cfg.batch_size,
                                            strategy.num_replicas_in_sync)
    classes = len(weights)
    pairs = (classes, weights) if cfg.consistency else None
    taught = (weights, soft) if soft is not None else None
    train_ds = datasets.image_dataset(x_tr, y_tr, cfg.batch_size, True, aug, cfg.randomness_seed,
                             cfg.acquisition, drop_remainder=drop, stain_p=cfg.stain_jitter,
                             pairs=pairs, taught=taught)
    # An epoch is as many steps either way: with pairs, half as many distinct images.
    steps = len(x_tr) // cfg.batch_size if drop else -(-len(x_tr) // cfg.batch_size)
    if cfg.lr_schedule == "cosine":  # the optimizer counts steps, so a resumed run resumes it
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps, alpha=0.01)
    with strategy.scope():
        loss = (consistency_loss(classes, cfg.consistency) if pairs
                else distillation_loss(cfg.distill) if taught
                else "sparse_categorical_crossentropy")
        model.compile(keras.optimizers.Adam(lr, use_ema=cfg.ema > 0,
                                            ema_momentum=cfg.ema or 0.99), loss,
                      metrics=[paired_accuracy(classes) if pairs or taught else "accuracy"])
    val_ds = datasets.image_dataset(x_va, y_va, eval_batch["val"], False, None, cfg.seed)
    backup, epoch_log = run / "checkpoints" / "backup", run / "checkpoints" / "epochs.csv"
    if not backup.exists() and epoch_log.exists():  # a fresh phase, not a resume
        epoch_log.unlink()
    epoch_log.parent.mkdir(parents=True, exist_ok=True)
    # With --ema and no pretrained weights, BatchNorm trains and its statistics follow the
    # raw weights, not the average.
    callbacks = epoch_callbacks(cfg, backup, ema=cfg.ema > 0)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs,
              # pairs and taught images carry them as sample weights
              class_weight=None if pairs or taught else weights,
              steps_per_epoch=steps if pairs else None,
              shuffle=False,  # the dataset shuffles itself
              callbacks=[*callbacks,
                         keras.callbacks.CSVLogger(str(epoch_log), append=True),
                         *extra_callbacks], verbose=1 if cfg.progress else 0)
    if pairs or taught:  # save a model that loads without this module's loss
        with strategy.scope():
            model.compile(model.optimizer, "sparse_categorical_crossentropy",
                          metrics=["accuracy"])
    return read_epoch_log(epoch_log)


def consistency_loss(num_classes: int, weight: float):
    """A Keras loss: cross-entropy, plus for labels marked paired (label + num_classes: the
    two jitters of one image in rows 2i and 2i + 1, image_dataset(pairs=...)) `weight` x
    the Jensen-Shannon divergence between the two predictions, so a lamp, focus or objective
    change that the jitter draws cannot move the answer (AugMix's consistency, Hendrycks et
    al. 2020, with two views). Plain labels (validation) get the cross-entropy alone.
    The class weights (sample weights) scale the whole of a row's loss, divergence included,
    and the training loss Keras logs includes the divergence: compare it only between runs
    with the same weight."""
    import keras
    from keras import ops

    def loss(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        n = ops.shape(y_pred)[0]
        rows = ops.arange(n)  # each row's partner: 2i <-> 2i + 1 (an odd batch's last: itself)
        partner = ops.take(y_pred, ops.minimum(rows + 1 - 2 * (rows % 2), n - 1), axis=0)
        p, q = ops.clip(y_pred, 1e-7, 1.0), ops.clip(partner, 1e-7, 1.0)
        m = (p + q) / 2
        divergence = 0.5 * ops.sum(p * ops.log(p / m) + q * ops.log(q / m), axis=-1)
        paired = ops.cast(y >= num_classes, y_pred.dtype)
        return (keras.losses.sparse_categorical_crossentropy(y % num_classes, y_pred)
                + weight * paired * divergence)
    return loss


TEMPERATURE = 2.0  # distillation: both sides' probabilities softened by this


def teacher_path(cfg: TrainConfig, splits, labels) -> Path:
    """The teacher's model.keras, checked before any work (nothing written when refused): it
    must exist, and a teacher run's labels and held-out images must be the student's, or its
    answers would carry the student's validation and test images into training."""
    from hemalite.train import data

    path = Path(cfg.teacher)
    run = path if path.is_dir() else path.parent
    path = path / "model.keras" if path.is_dir() else path
    if not path.is_file():
        raise data.TrainError(f"--teacher {cfg.teacher}: no model.keras there (a finished "
                              "`hemalite train` run, or its model.keras)")
    if (run / "labels.txt").is_file() and data.read_labels(run / "labels.txt") != tuple(labels):
        raise data.TrainError(f"--teacher {cfg.teacher}: its labels "
                              f"{list(data.read_labels(run / 'labels.txt'))} are not "
                              f"{list(labels)}")
    for name in ("val", "test"):
        manifest = run / "splits" / f"{name}.csv"
        if not manifest.is_file():
            log.warning("--teacher %s has no %s manifest: cannot check that it never trained "
                        "on this run's %s images", cfg.teacher, name, name)
            continue
        theirs = {s.path for s in data.read_manifest(manifest, labels)}
        if theirs != {s.path for s in splits[name]}:
            raise data.TrainError(f"--teacher {cfg.teacher} was trained on another split (its "
                                  f"{name} images differ): it may have learnt this run's "
                                  f"{name} images; use the same data, --seed and fractions")
    return path


def teacher_digest(path: Path) -> str:
    """sha256 of what a teacher answers from: the weights in its .keras file (each dataset
    under the weights file's `layers` and `vars`, by name, with its shape). Not of the file:
    Keras writes the save time and the optimiser's state into it, so the same teacher saved
    again would read as another. Read with h5py, no model built: building one would draw
    from the random state the student's initialisation is seeded from."""
    import hashlib
    import io
    import zipfile

    import h5py
    import numpy as np

    from hemalite.train import data

    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as archive, \
                h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
            for group in ("layers", "vars"):
                names: list[str] = []
                if group in weights:
                    weights[group].visititems(
                        lambda name, item: names.append(name)
                        if isinstance(item, h5py.Dataset) else None)
                for name in sorted(names):
                    value = np.ascontiguousarray(weights[group][name][()])
                    digest.update(f"{group}/{name}{value.shape}".encode() + value.tobytes())
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise data.TrainError(f"--teacher {path}: not a Keras model file ({exc})") from None
    return digest.hexdigest()


def check_teacher_unchanged(out: Path, path: Path) -> str:
    """The teacher's digest (teacher_digest), checked against the one the run recorded in
    --out/teacher.json when it started: a teacher retrained at the same path while the
    student was interrupted would give a resumed student other targets than its first
    epochs learnt. Refused with one line (use --force to start afresh). Every worker of a
    multi-worker run reads the chief's --out, so all refuse alike. Returns the digest."""
    from hemalite.train import data

    digest = teacher_digest(path)
    recorded = out / "teacher.json"
    if recorded.is_file():
        before = json.loads(recorded.read_text()).get("sha256")
        if before != digest:
            raise data.TrainError(f"--teacher {path} has changed since {out} started (sha256 "
                                  f"{str(before)[:12]}... -> {digest[:12]}...): a resumed run "
                                  "would learn other targets; use --force to train afresh")
    elif (out / "checkpoints").exists():
        log.warning("%s records no teacher (started before hemalite recorded one): cannot "
                    "check that %s is the teacher its first epochs learnt from", out, path)
    return digest


def teacher_targets(cfg: TrainConfig, path: Path, samples, num_classes: int, expected: int):
    """The teacher's probabilities on each training image, unjittered, read at the teacher's
    own input size from the files (the contract's preprocess, as it was trained): (n, classes).

    The student learns them under every jitter: what a lab's other lamp or objective should
    not change is the answer the teacher gives on the clean image."""
    import keras
    import numpy as np

    import hemalite.train.model  # noqa: F401  registers the Ground layer for loading
    from hemalite.contract import InputSpec
    from hemalite.train import data

    teacher = keras.models.load_model(path, compile=False)
    side = int(teacher.input_shape[1])
    x, _, _ = data.load_pixels(cfg.data_dir, samples, InputSpec(side, side), cfg.progress)
    if len(x) != expected:  # the same files fail to decode at any size
        raise data.TrainError(f"--teacher: read {len(x)} training images, expected {expected}")
    log.info("teacher %s (%d px) on %d training images", path, side, len(x))
    chunks = []
    for start in range(0, len(x), 256):  # float copies of 256 images, not of all of them
        probs = teacher.predict(x[start:start + 256].astype("float32"),
                                batch_size=cfg.batch_size, verbose=0)
        chunks.append(probs[0] if isinstance(probs, (list, tuple)) else probs)
    probs = np.concatenate(chunks).astype("float32")
    if probs.shape[1] != num_classes:
        raise data.TrainError(f"--teacher {cfg.teacher} answers {probs.shape[1]} classes, "
                              f"this run has {num_classes}")
    return probs


def distillation_loss(weight: float, temperature: float = TEMPERATURE):
    """A Keras loss: (1 - weight) x cross-entropy with the label + weight x T^2 x the
    Kullback-Leibler divergence from the teacher's probabilities to the model's, both
    softened by the temperature T (Hinton et al. 2015). Training rows carry [label, teacher's
    probabilities] (image_dataset(taught=...)); plain labels (validation) get the
    cross-entropy alone, so the validation loss stays comparable with other runs."""
    import keras
    from keras import ops

    def soften(p):
        return ops.softmax(ops.log(ops.clip(p, 1e-7, 1.0)) / temperature, axis=-1)

    def loss(y_true, y_pred):
        if len(y_true.shape) < 2 or y_true.shape[-1] == 1:  # a plain label
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        label = ops.cast(y_true[:, 0], "int32")
        teacher, student = soften(y_true[:, 1:]), ops.clip(soften(y_pred), 1e-7, 1.0)
        divergence = ops.sum(teacher * (ops.log(ops.clip(teacher, 1e-7, 1.0))
                                        - ops.log(student)), axis=-1)
        return ((1 - weight) * keras.losses.sparse_categorical_crossentropy(label, y_pred)
                + weight * temperature ** 2 * divergence)
    return loss


def paired_accuracy(num_classes: int):
    """The accuracy metric for both rewritten losses' labels: consistency_loss's (a label +
    num_classes when paired), distillation_loss's rows (the label first), or plain labels."""
    import keras
    from keras import ops

    def accuracy(y_true, y_pred):
        if len(y_true.shape) > 1 and y_true.shape[-1] not in (None, 1):  # [label, teacher]
            y_true = y_true[:, 0]
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32") % num_classes
        return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, -1), "int32"), y), "float32")
    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def history_of(hist) -> dict:
    """A Keras History as {metric: [per epoch]}, plain floats for JSON."""
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def read_epoch_log(path: Path) -> dict:
    """The CSVLogger file as {metric: [per epoch]}: it survives an interruption."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}
