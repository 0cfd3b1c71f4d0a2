"""Training: one function, `train(config)`, from a class-folder dataset to a run directory.

The recipe for MobileNetV2 with pretrained weights, shaped for a 2-core CPU:
  1. the frozen backbone's pooled features are computed once (one pass over the images)
     and the head is trained on them: Adam, up to `epochs` epochs, early stopping and
     ReduceLROnPlateau on validation loss: seconds instead of an hour;
  2. the backbone (from `fine_tune_from`; by default all of it) is fine-tuned end to end on
     augmented images at a lower rate, BatchNorm frozen, resumable after interruption.
     Measured on all4: head alone ~98 % test accuracy; the top blocks only (block_13 up,
     6 epochs) 98.1 %; the whole backbone is what reaches 99 % (see the train issue note).
With `--weights none` or `--arch cnn` there is nothing to cache: one end-to-end phase.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemalite import __version__, cells
from hemalite.contract import InputSpec
from hemalite.files import atomic_path, read_json, write_json
from hemalite.metrics import classification_metrics
from hemalite.train import data, multiworker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    out: str
    arch: str = "mobilenetv2"  # or "cnn"
    weights: str = "imagenet"  # "imagenet" (Keras download), "none", or a .weights.h5 path
    alpha: float = 1.0
    image_size: int = 224
    work_size: int | None = None  # the side the backbone sees (resized inside the model);
    #                               None: image_size
    epochs: int = 50  # head phase (or the single phase): early stopping ends it sooner
    fine_tune_epochs: int = 7
    fine_tune_from: str = "Conv1"  # the whole backbone (BatchNorm stays frozen)
    lr_schedule: str = "plateau"  # fine-tuning's rate: cut x0.3 when validation loss stalls,
    #                               or "cosine": decayed every step to 1 % over the epochs
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    dropout: float = 0.2
    ema: float = 0.0  # fine-tuning (the single phase without pretrained weights): validate,
    #                   keep and save the weights' moving average with this momentum (0: off)
    patience: int = 5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42  # the split, and training's randomness unless train_seed is given
    train_seed: int | None = None  # initialisation, shuffling, augmentation: another run on
    #                                the same split (a seed study) without moving the split
    distribute: str = "none"  # "mirrored" (all local GPUs, else CPUs) or "multiworker"
    augment: bool = True  # the paper's set: rotation, flips, contrast, Gaussian noise
    ground: bool = True  # background outside the leukocyte mask set to one grey, in the model
    acquisition: bool = True  # + another lab's lamp, stain, focus, JPEG, magnification
    stain_jitter: float = 0.0  # with acquisition: share of images whose stain balance is
    #                            redrawn (hemalite.shifts.stain), after the hue jitter
    consistency: float = 0.0  # fine-tuning: each image as two jitters side by side in a
    #                           batch, their predictions pulled together by this weight x
    #                           their Jensen-Shannon divergence (consistency_loss); 0: off
    progress: bool = True
    force: bool = False  # replace whatever an earlier run left in `out`

    def __post_init__(self):
        if self.work_size is not None and self.arch != "mobilenetv2":
            raise data.TrainError(f"--work-size resizes the input of MobileNetV2's backbone; "
                                  f"--arch {self.arch} has none (leave --work-size out)")
        if self.ground and self.image_size % cells.BLOCK:
            raise data.TrainError(f"--image-size {self.image_size}: the stain mask works on "
                                  f"{cells.BLOCK} x {cells.BLOCK} blocks, so the side must be "
                                  f"a multiple of {cells.BLOCK} (e.g. 224, 256, 288)")
        if self.stain_jitter and not self.acquisition:
            raise data.TrainError("--stain-jitter is part of the acquisition jitter; "
                                  "--no-acquisition turns that off (leave one of them out)")
        if self.consistency and self.batch_size % 2:
            raise data.TrainError(f"--consistency puts two views of each image in a batch: "
                                  f"--batch-size must be even, not {self.batch_size}")

    @property
    def randomness_seed(self) -> int:
        """The seed of everything random in training but the split."""
        return self.seed if self.train_seed is None else self.train_seed

    @property
    def spec(self) -> InputSpec:
        return InputSpec(self.image_size, self.image_size)


def make_strategy(name: str):
    """tf.distribute strategy for --distribute (None keeps the default strategy)."""
    import tensorflow as tf

    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":  # cluster from the TF_CONFIG environment variable
        if not os.environ.get("TF_CONFIG"):  # TensorFlow would quietly train alone
            raise data.TrainError("--distribute multiworker reads the cluster from TF_CONFIG, "
                                  "an environment variable that is not set (README: Train on "
                                  "several machines)")
        multiworker.fix_keras_multiworker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown --distribute {name!r} (none, mirrored, multiworker)")


def augmenter(seed: int):
    """The paper's augmentation: rotation, flips, contrast, Gaussian noise (on 0-255 pixels)."""
    import keras

    return keras.Sequential([
        keras.layers.Rescaling(1.0 / 255.0),  # GaussianNoise takes stddev in [0, 1]
        keras.layers.RandomRotation(0.1, fill_mode="reflect", seed=seed),
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed + 1),
        keras.layers.RandomContrast(0.2, value_range=(0, 1), seed=seed + 2),
        keras.layers.GaussianNoise(0.015, seed=seed + 3),
        keras.layers.Rescaling(255.0),
    ], name="augment")


def acquisition_jitter(seed: int, stain_p: float = 0.0):
    """A tf.data map: one random acquisition (hemalite.shifts) per image, in numpy.

    The same shift functions the audit uses, at random strengths from wider ranges.
    """
    import tensorflow as tf

    from hemalite.shifts import random_acquisition

    rng = np.random.default_rng(seed)

    def jitter(image, *rest):
        out = tf.numpy_function(lambda a: random_acquisition(a, rng, stain_p), [image],
                                tf.uint8, stateful=True)
        return (tf.ensure_shape(out, image.shape), *rest)
    return jitter


def image_dataset(x, y, batch_size: int, shuffle: bool, augment, seed: int,
                  acquisition: bool = False, drop_remainder: bool = False,
                  stain_p: float = 0.0, pairs: tuple[int, dict] | None = None):
    """tf.data over preprocessed uint8 images; augmentation runs here, not in the model.

    `pairs` = (number of classes, class weights): each image twice, side by side (rows 2i
    and 2i + 1 of a batch), each copy jittered on its own; labels marked paired (label +
    number of classes, what consistency_loss reads) and the class weights as sample
    weights. The stream repeats without end: fit with steps_per_epoch.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    # Multi-worker: in-memory slices have no files to shard, and TF 2.21's AUTO quietly falls
    # back to DATA. Say DATA: every worker runs this whole pipeline (same seeded shuffle and
    # jitter) and keeps its slice of each global batch (OFF would train every worker on all).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if pairs is not None:
        classes, weights = pairs
        table = tf.constant([weights[c] for c in range(classes)], tf.float32)
        ds = ds.map(lambda a, b: (tf.stack([a, a]), tf.fill([2], b + classes),
                                  tf.fill([2], tf.gather(table, b)))).unbatch().repeat()
    if acquisition:  # sequential: one numpy Generator, and the GIL would serialise it anyway
        ds = ds.map(acquisition_jitter(seed, stain_p))
    ds = ds.batch(batch_size, drop_remainder).map(
        lambda a, *rest: (tf.cast(a, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(lambda a, *rest: (tf.clip_by_value(augment(a, training=True), 0.0, 255.0),
                                      *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """'Balanced' weights n / (k * n_c) so the smallest class (Benign) is not drowned out."""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    return {c: float(len(y) / (num_classes * n)) if n else 0.0 for c, n in enumerate(counts)}


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


def paired_accuracy(num_classes: int):
    """The accuracy metric for consistency_loss's labels (paired or not)."""
    import keras
    from keras import ops

    def accuracy(y_true, y_pred):
        y = ops.cast(ops.reshape(y_true, (-1,)), "int32") % num_classes
        return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, -1), "int32"), y), "float32")
    return keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def _callbacks(cfg: TrainConfig, backup_dir: Path | None, ema: bool = False):
    """The per-epoch callbacks, in the order they must run at an epoch's end: the rate cut,
    then the backup a killed run resumes from (so it holds the cut rate and, with `ema`, the
    raw weights with their average beside them), then the swap of the average into the
    model, then early stopping, which keeps the best epoch's weights (the average's) and
    restores them after Keras's own end-of-fit step has written the raw ones back."""
    import keras

    cbs = []
    if cfg.lr_schedule == "plateau":  # a cosine schedule sets the rate itself
        cbs.append(keras.callbacks.ReduceLROnPlateau(
            "val_loss", factor=0.3, patience=max(1, cfg.patience // 2), min_lr=1e-6))
    else:
        cbs.append(_log_rate())
    if backup_dir is not None:  # resume a killed run where it stopped
        cbs.append(keras.callbacks.BackupAndRestore(str(backup_dir)))
    if ema:  # validation, the best epoch and the saved model: the average
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    cbs.append(keras.callbacks.EarlyStopping("val_loss", patience=cfg.patience,
                                             restore_best_weights=True))
    return cbs


def _log_rate():
    """A callback: the rate at each epoch's end into the history, as ReduceLROnPlateau logs it."""
    import keras

    class LogRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            logs["learning_rate"] = float(rate)
    return LogRate()


def _history(hist) -> dict:
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def _read_epoch_log(path: Path) -> dict:
    """The CSVLogger file as {metric: [per epoch]}: it survives an interruption."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def save_keras(model, path: Path) -> None:
    """Save a .keras file atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


# What `hemalite train` (and `hemalite convert`'s default --out) leave in a run directory.
RUN_ARTEFACTS = ("model.keras", "config.json", "labels.txt", "history.json", "metrics.json",
                 "confusion_matrix.png", "splits", "checkpoints", "tflite")
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


def train(cfg: TrainConfig, extra_callbacks=()) -> dict:
    """Run the whole recipe; write model, config, manifests, history and metrics to cfg.out.

    Returns metrics.json's content; with "already_complete" when cfg.out held this run.
    Multi-worker: every worker runs all of it; only the chief writes cfg.out, the others a
    temporary twin that is removed at the end (hemalite.train.multiworker)."""
    strategy = make_strategy(cfg.distribute)  # first: MultiWorkerMirrored needs a fresh runtime
    out = Path(cfg.out)
    run = multiworker.worker_dir(out, strategy)
    chief = run == out
    try:
        if chief:
            complete = prepare_run_dir(cfg)
        else:  # reads the chief's --out; only the chief deletes (--force) and starts afresh
            log.info("worker %d writes to %s, removed at the end; the chief writes %s",
                     strategy.cluster_resolver.task_id, run, out)
            complete = not cfg.force and prepare_run_dir(cfg)
            if not cfg.force:
                multiworker.restore_from_chief(out, run)
        if cfg.distribute == "multiworker":
            multiworker.check_same_state(strategy, out, run, complete)
        if complete:
            return {**read_json(out / "metrics.json"), "already_complete": True, "chief": chief}
        return {**_train(cfg, run, strategy, extra_callbacks), "chief": chief}
    finally:
        if not chief:
            multiworker.remove_worker_dir(run)


def _train(cfg: TrainConfig, run: Path, strategy, extra_callbacks) -> dict:
    """The recipe on one worker: load, build, the head, fine-tuning, evaluation."""
    import keras

    from hemalite.train import model as models

    start = time.time()
    keras.utils.set_random_seed(cfg.randomness_seed)
    splits, labels, summary = prepare_splits(cfg)
    log.info("split: %s", {k: v for k, v in summary.items() if k != "skipped"})
    pixels = _load_splits(cfg, splits, summary)
    model, backbone, head = _build(cfg, len(labels), strategy)
    pretrained = cfg.arch == "mobilenetv2" and cfg.weights.lower() != "none"
    if pretrained:  # a misspelt layer: one line now, not after the head has trained
        models.fine_tune_start(backbone, cfg.fine_tune_from)
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:  # else each replica's BatchNorm statistics drift
        models.synchronise_batchnorm(model)
    if cfg.consistency and cfg.batch_size % (2 * replicas):
        raise data.TrainError(f"--consistency keeps an image's two views in one replica's "
                              f"batch: --batch-size must be a multiple of {2 * replicas}")
    if multiworker.leaves_replica_empty(cfg.batch_size, replicas):
        raise data.TrainError(f"--batch-size {cfg.batch_size} over {replicas} replicas leaves "
                              f"one without images: use a multiple of {replicas}")
    # Prediction and validation batches that leave no replica empty (multiworker.py).
    eval_batch = {s: multiworker.eval_batch_size(len(pixels[s][0]), cfg.batch_size, replicas)
                  for s in data.SPLITS}
    write_run_start(cfg, run, splits, labels)
    weights = class_weights(pixels["train"][1], len(labels))
    history: dict = {}
    if pretrained:
        history["head"] = _fit_head(cfg, run, model, head, pixels, eval_batch, weights,
                                    strategy)
        models.set_fine_tuning(backbone, cfg.fine_tune_from)
        epochs, lr = cfg.fine_tune_epochs, cfg.fine_tune_learning_rate
    else:
        epochs, lr = cfg.epochs, cfg.learning_rate
    if epochs > 0:
        history["fine_tune" if pretrained else "train"] = _fit_end_to_end(
            cfg, run, model, pixels, eval_batch, weights, strategy, epochs, lr, extra_callbacks)
    save_keras(model, run / "model.keras")
    write_json(run / "history.json", history)
    result = {"split": summary, "seconds": round(time.time() - start, 1),
              "replicas": replicas, **_evaluate(model, pixels["test"], labels,
                                                eval_batch["test"], run)}
    write_json(run / "metrics.json", result)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # finished: nothing to resume
    return result


def _load_splits(cfg: TrainConfig, splits, summary: dict) -> dict:
    """{split: (x, y)} through preprocess(); undecodable files join summary['skipped']."""
    pixels = {}
    for name in data.SPLITS:
        x, y, failures = data.load_pixels(cfg.data_dir, splits[name], cfg.spec, cfg.progress)
        summary["skipped"] += failures
        pixels[name] = (x, y)
    for line in summary["skipped"]:
        log.warning("skipped %s", line)
    if len(pixels["val"][0]) == 0 or len(pixels["train"][0]) == 0:
        raise data.DatasetError("too few images to split into train and validation")
    return pixels


def _build(cfg: TrainConfig, num_classes: int, strategy):
    """(model, backbone, head) under the strategy; backbone and head are None for the CNN."""
    from hemalite.train import model as models

    with strategy.scope():
        if cfg.arch == "cnn":
            return models.build_cnn(num_classes, cfg.image_size, ground=cfg.ground), None, None
        if cfg.arch == "mobilenetv2":
            return models.build_mobilenet(num_classes, cfg.image_size, cfg.alpha, cfg.weights,
                                          cfg.dropout, cfg.ground, cfg.work_size)
    raise ValueError(f"unknown --arch {cfg.arch!r} (mobilenetv2, cnn)")


def _fit_head(cfg: TrainConfig, run: Path, model, head, pixels: dict, eval_batch: dict,
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
                    callbacks=_callbacks(cfg, None), verbose=verbose)
    history = _history(hist)
    with atomic_path(head_path) as tmp:
        head.save_weights(tmp)
    write_json(head_history, history)
    return history


def _fit_end_to_end(cfg: TrainConfig, run: Path, model, pixels: dict, eval_batch: dict,
                    weights: dict, strategy, epochs: int, lr: float, extra_callbacks) -> dict:
    """Phase 2 (or the single phase): the whole model on augmented images, resumable after
    an interruption (BackupAndRestore); its history, read from the per-epoch CSV log."""
    import keras

    (x_tr, y_tr), (x_va, y_va) = pixels["train"], pixels["val"]
    aug = augmenter(cfg.randomness_seed) if cfg.augment else None
    drop = multiworker.leaves_replica_empty(len(x_tr) % cfg.batch_size,
                                            strategy.num_replicas_in_sync)
    classes = len(weights)
    pairs = (classes, weights) if cfg.consistency else None
    train_ds = image_dataset(x_tr, y_tr, cfg.batch_size, True, aug, cfg.randomness_seed,
                             cfg.acquisition, drop_remainder=drop, stain_p=cfg.stain_jitter,
                             pairs=pairs)
    # An epoch is as many steps either way: with pairs, half as many distinct images.
    steps = len(x_tr) // cfg.batch_size if drop else -(-len(x_tr) // cfg.batch_size)
    if cfg.lr_schedule == "cosine":  # the optimizer counts steps, so a resumed run resumes it
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * steps, alpha=0.01)
    with strategy.scope():
        model.compile(keras.optimizers.Adam(lr, use_ema=cfg.ema > 0,
                                            ema_momentum=cfg.ema or 0.99),
                      consistency_loss(classes, cfg.consistency) if pairs
                      else "sparse_categorical_crossentropy",
                      metrics=[paired_accuracy(classes) if pairs else "accuracy"])
    val_ds = image_dataset(x_va, y_va, eval_batch["val"], False, None, cfg.seed)
    backup, epoch_log = run / "checkpoints" / "backup", run / "checkpoints" / "epochs.csv"
    if not backup.exists() and epoch_log.exists():  # a fresh phase, not a resume
        epoch_log.unlink()
    epoch_log.parent.mkdir(parents=True, exist_ok=True)
    # With --ema and no pretrained weights, BatchNorm trains and its statistics follow the
    # raw weights, not the average.
    callbacks = _callbacks(cfg, backup, ema=cfg.ema > 0)
    model.fit(train_ds, validation_data=val_ds, epochs=epochs,
              class_weight=None if pairs else weights,  # pairs carry them as sample weights
              steps_per_epoch=steps if pairs else None,
              shuffle=False,  # the dataset shuffles itself
              callbacks=[*callbacks,
                         keras.callbacks.CSVLogger(str(epoch_log), append=True),
                         *extra_callbacks], verbose=1 if cfg.progress else 0)
    if pairs:  # save a model that loads without this module's loss
        with strategy.scope():
            model.compile(model.optimizer, "sparse_categorical_crossentropy",
                          metrics=["accuracy"])
    return _read_epoch_log(epoch_log)


def _evaluate(model, test: tuple, labels, batch_size: int, run: Path) -> dict:
    """{'test': metrics} on the test split and its confusion_matrix.png ({} when empty)."""
    x_te, y_te = test
    if not len(x_te):
        return {}
    probs = model.predict(x_te.astype("float32"), batch_size=batch_size, verbose=0)
    metrics = classification_metrics(y_te, probs, labels)
    from hemalite.plots import plot_confusion

    plot_confusion({"test split": np.asarray(metrics["confusion_matrix"])}, labels,
                   run / "confusion_matrix.png")
    return {"test": metrics}
