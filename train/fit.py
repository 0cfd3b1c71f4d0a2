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

Where each part is: this module holds the configuration (TrainConfig), the distribution
strategy and the recipe's order (train); datasets.py the tf.data pipelines and their
augmentation; phases.py the two phases; callbacks.py their per-epoch callbacks; rundir.py
the run directory (resume, refuse, --force) and the split; data.py the dataset folder.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemalite import cells
from hemalite.contract import InputSpec
from hemalite.files import read_json, write_json
from hemalite.metrics import classification_metrics
from hemalite.train import data, datasets, multiworker, phases
# Defined in the modules above, importable from here as before the split (tests and
# scripts/experiments import them from hemalite.train.fit):
from hemalite.train.datasets import augmenter, class_weights, image_dataset  # noqa: F401
from hemalite.train.phases import consistency_loss, paired_accuracy  # noqa: F401
from hemalite.train.rundir import (RUN_ARTEFACTS, prepare_run_dir,  # noqa: F401
                                   prepare_splits, save_keras, write_run_start)

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
    teacher: str | None = None  # a finished run (or its model.keras) whose predictions on the
    #                             clean training images fine-tuning also learns, under every
    #                             jitter (distillation: phases.distillation_loss)
    distill: float = 0.5  # with teacher: the teacher's share of the loss
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
        if self.teacher and self.consistency:
            raise data.TrainError("--teacher and --consistency both rewrite fine-tuning's "
                                  "loss: use one of them")
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
                                  "an environment variable that is not set (docs/multiworker.md)")
        multiworker.fix_keras_multiworker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown --distribute {name!r} (none, mirrored, multiworker)")


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
    teacher = phases.teacher_path(cfg, splits, labels) if cfg.teacher else None
    teacher_digest = phases.check_teacher_unchanged(Path(cfg.out), teacher) if teacher else None
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
    if teacher:  # which teacher's answers this run learns, checked again on a resume
        write_json(run / "teacher.json", {"path": str(teacher), "sha256": teacher_digest})
    weights = datasets.class_weights(pixels["train"][1], len(labels))
    history: dict = {}
    if pretrained:
        history["head"] = phases.fit_head(cfg, run, model, head, pixels, eval_batch,
                                          weights, strategy)
        models.set_fine_tuning(backbone, cfg.fine_tune_from)
        epochs, lr = cfg.fine_tune_epochs, cfg.fine_tune_learning_rate
    else:
        epochs, lr = cfg.epochs, cfg.learning_rate
    soft = (phases.teacher_targets(cfg, teacher, splits["train"], len(labels),
                                   len(pixels["train"][0]))
            if teacher and epochs > 0 else None)
    if epochs > 0:
        history["fine_tune" if pretrained else "train"] = phases.fit_end_to_end(
            cfg, run, model, pixels, eval_batch, weights, strategy, epochs, lr, extra_callbacks,
            soft)
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
