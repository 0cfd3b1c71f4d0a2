"""Multi-worker training (--distribute multiworker): who writes what, and where.

Every worker runs the same program, saves included (TensorFlow's multi-worker guide: saving
may take part in collective ops, so no worker may skip it), but only the chief writes the run
directory. The others write to the guide's temporary twin, `dirname/workertemp_<task id>/
basename`, and remove it when done. To resume a killed run every worker must start from the
same state: a non-chief copies the chief's checkpoints before training (so --out must be
storage every worker sees), and the workers check that they agree before the first step.

Keras 3's `fit` does not run under MultiWorkerMirroredStrategy as released (3.15.1):
`fix_keras_multiworker` mends the two places it fails.
"""
from __future__ import annotations

import logging
import shutil
import zlib
from pathlib import Path

from hemalite.train.data import TrainError

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def fix_keras_multiworker() -> None:
    """Mend Keras 3's TensorFlow trainer for MultiWorkerMirroredStrategy (idempotent).

    keras-team/keras#20585 and tensorflow/tensorflow#72388, still so in Keras 3.15.1:
    1. `fit` builds the model from a first batch that it all-reduces as one nested
       structure, which the collective strategy cannot convert ("PerReplica ... to a
       Tensor"); a worker's own slice of that batch has the shapes the build needs.
    2. the step's logs are averaged across workers with `axis=0`, which fails on scalar
       metrics ("Invalid reduction dimension 0"); `axis=None` averages across replicas,
       what the single-machine path does, so every worker sees the same loss and early
       stopping and the learning-rate schedule decide alike on all of them.
    Only the multi-worker path changes; every other strategy calls Keras' own code.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    multi = getattr(trainer, "_collective_all_reduce_multi_worker", None)
    build = getattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    reduce = getattr(trainer, "reduce_per_replica", None)
    if not (multi and build and reduce):
        log.warning("Keras' TensorFlow trainer has changed: multi-worker fixes not applied")
        return
    if getattr(reduce, "hemalite_fix", False):
        return

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi(strategy):
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
            break
        return build(self, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and multi(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce(values, strategy, reduction)

    reduce_per_replica.hemalite_fix = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica


def leaves_replica_empty(batch: int, replicas: int) -> bool:
    """True when TensorFlow's split of one batch gives some replica no example at all.

    With DATA sharding each batch is cut into `replicas` pieces of ceil(batch / replicas)
    in turn (tf.data's legacy rebatch), so 1 example over 2 replicas, or 5 over 4, leaves
    the last piece empty. With oneDNN (TensorFlow's default on x86) a convolution, and the
    Ground layer, on an empty batch return a wrongly shaped tensor and the step fails
    ("Incompatible shapes: [0,64,64,3] vs. [32]").
    """
    return batch > 0 and -(-batch // replicas) * (replicas - 1) >= batch


def eval_batch_size(n: int, batch: int, replicas: int) -> int:
    """The batch size nearest `batch` (smaller first) whose batches of n leave no replica empty.

    For prediction and validation, where every example counts (training drops the last
    partial batch instead). The batch size changes no result there, only memory.
    """
    if replicas == 1 or n == 0:
        return batch
    for size in sorted(range(1, max(n, batch) + 1), key=lambda b: (abs(b - batch), b)):
        if not leaves_replica_empty(size, replicas) and \
                not leaves_replica_empty(n % size, replicas):
            return size
    raise TrainError(f"{n} images cannot be split over {replicas} replicas without leaving "
                     "one empty: use fewer workers or more images")


def is_chief(strategy) -> bool:
    """True for the worker that writes the run directory (and for any single-process run)."""
    return bool(strategy.extended.should_checkpoint)


def worker_dir(out: Path, strategy) -> Path:
    """Where this worker writes: `out` for the chief, its temporary twin for the others."""
    if is_chief(strategy):
        return out
    return out.parent / f"workertemp_{strategy.cluster_resolver.task_id}" / out.name


def remove_worker_dir(run: Path) -> None:
    """Remove a non-chief's temporary twin (and its workertemp_N folder once empty)."""
    shutil.rmtree(run, ignore_errors=True)
    try:
        run.parent.rmdir()
    except OSError:  # another run's twin still in it, or already gone
        pass


def restore_from_chief(out: Path, run: Path) -> None:
    """Replace this worker's checkpoints with a copy of the chief's (none if it has none).

    Runs before the first collective op, so the chief cannot be writing them meanwhile.
    """
    mine, chiefs = run / CHECKPOINTS, out / CHECKPOINTS
    shutil.rmtree(mine, ignore_errors=True)
    if chiefs.is_dir():
        shutil.copytree(chiefs, mine)


def resume_state(run: Path, complete: bool) -> int:
    """A fingerprint of what a (re)started run will do: nothing, or resume from these files."""
    root = run / CHECKPOINTS
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) \
        if root.is_dir() else []
    backup = root / "backup" / "training_metadata.json"  # BackupAndRestore's epoch
    text = f"{complete}\n" + "\n".join(names) + (backup.read_text() if backup.is_file() else "")
    return zlib.crc32(text.encode())


def check_same_state(strategy, out: Path, run: Path, complete: bool) -> None:
    """Raise TrainError unless every worker resumes from the same checkpoints.

    A worker that cannot see the chief's --out would start from epoch 0 with fresh weights
    while the chief resumes: the replicas would silently diverge, then hang. One all-gather
    of a fingerprint finds it before the first step, on every worker at once.
    """
    import tensorflow as tf

    mine = resume_state(run, complete)
    every = strategy.gather(strategy.run(lambda: tf.constant([mine], tf.int64)), axis=0)
    if len(set(every.numpy().tolist())) > 1:
        raise TrainError(
            f"the workers would resume from different states ({out / CHECKPOINTS} differs "
            "between them): a multi-worker run resumes only when --out is on storage every "
            f"worker sees; delete {out / CHECKPOINTS} on every machine to start over")
