"""The training data as tf.data: preprocessed uint8 images, shuffled, jittered and augmented
on the way to the model (never inside it), and the class weights.

The images reach the model through image_dataset in fine-tuning (hemalite.train.phases);
the class weights serve both phases. TensorFlow is imported inside the functions, as
everywhere in hemalite.train.
"""
from __future__ import annotations

import numpy as np


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
                  stain_p: float = 0.0, pairs: tuple[int, dict] | None = None,
                  taught: tuple[dict, np.ndarray] | None = None):
    """tf.data over preprocessed uint8 images; augmentation runs here, not in the model.

    `pairs` = (number of classes, class weights): each image twice, side by side (rows 2i
    and 2i + 1 of a batch), each copy jittered on its own; labels marked paired (label +
    number of classes, what consistency_loss reads) and the class weights as sample
    weights. The stream repeats without end: fit with steps_per_epoch.
    `taught` = (class weights, the teacher's probabilities per image): each label becomes
    the row [label, probabilities] distillation_loss reads, the class weights sample weights.
    """
    import tensorflow as tf

    if taught is not None:
        weights, soft = taught
        rows = np.concatenate([np.asarray(y, "float32")[:, None], soft], axis=1)
        ds = tf.data.Dataset.from_tensor_slices(
            (x, rows, np.array([weights[int(c)] for c in y], "float32")))
    else:
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
