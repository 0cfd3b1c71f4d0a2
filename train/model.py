"""Model building: MobileNetV2 transfer learning and the paper's small baseline CNN.

Every model takes raw 0-255 RGB pixels: the scaling is a Rescaling layer inside the model,
so the exported .tflite needs no normalisation code on the device.
"""
from __future__ import annotations

import os
import urllib.error
import warnings

import keras

from hemalite import cells
from hemalite.contract import NORM_MEAN, NORM_STD
from hemalite.train.data import TrainError

BACKBONE = "mobilenetv2"
PREPROCESSING = ("ground", "resize", "scale")  # the layers before the backbone, when present


@keras.saving.register_keras_serializable(package="hemalite")
class Ground(keras.layers.Layer):
    """Everything outside the leukocyte stain mask becomes one grey: the model sees cells.

    hemalite.cells.neutralise_background in Keras ops, with the same constants, so the mask
    travels inside the model and the .tflite (any client gets it, MediaPipe included).
    The mask is computed on 4 x 4 block means and upsampled (hemalite.cells explains why and
    what it saves). Arithmetic only (relu, clip, pools, resize, multiply-add): comparison ops
    would convert to int8 but abort LiteRT at invoke. No weights; takes and returns raw
    0-255 pixels.
    """

    def call(self, x):
        ops = keras.ops
        means = ops.average_pool(x, cells.BLOCK, strides=cells.BLOCK, padding="valid")
        r, g, b = means[..., 0:1], means[..., 1:2], means[..., 2:3]
        score = (r + b) * 0.5 - g - ops.relu(r - b - cells.RED_TEXT)
        peak = ops.max(score, axis=(1, 2), keepdims=True)
        threshold = ops.maximum(peak * cells.RELATIVE, cells.FLOOR)
        mask = ops.clip((score - threshold) * (1.0 / cells.RAMP), 0.0, 1.0)
        mask = ops.max_pool(mask, cells.RIM, strides=1, padding="same")
        # three channels before the resize: an int8 multiply of equal shapes is vectorised,
        # a broadcast one was not (0.7 against 1.4 ms for the layer, session 14)
        mask = ops.image.resize(ops.concatenate([mask] * 3, axis=-1), (x.shape[1], x.shape[2]),
                                interpolation="bilinear")
        return (x - cells.BACKGROUND) * mask + cells.BACKGROUND

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="hemalite")
class Resize(keras.layers.Layer):
    """Bilinear resize to size x size (RESIZE_BILINEAR in the .tflite, int8 included).

    Not keras.layers.Resizing: as a preprocessing layer its `training` defaults to True,
    and a model called without `training` then ran its BatchNorm and dropout in training
    mode (measured with Keras 3.15).
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def call(self, x):
        return keras.ops.image.resize(x, (self.size, self.size), interpolation="bilinear")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


def resolve_weights(weights: str) -> str | None:
    """'imagenet' (Keras' own download), 'none', or a local .weights.h5 path."""
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise TrainError(f"weights file not found: {weights}")
    return weights


def freeze_batchnorm(model: keras.Model) -> int:
    """Keep every BatchNormalization layer in inference mode, for good; return how many.

    With Keras 3.15, `base(x, training=False)` is not honoured once the outer model trains
    (shared/weights/README.md); a non-trainable BatchNormalization layer is: Keras runs it
    in inference mode and never updates its moving statistics.
    """
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def build_backbone(image_size: int, alpha: float, weights: str) -> keras.Model:
    """MobileNetV2 without its top, average-pooled, with ImageNet or local weights."""
    resolved = resolve_weights(weights)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False,
            weights="imagenet" if resolved == "imagenet" else None, pooling="avg")
    except Exception as err:  # Keras turns a failed download into a bare Exception
        if isinstance(err.__context__, urllib.error.URLError):
            raise TrainError("cannot download the ImageNet weights (no network?): pass "
                             "--weights PATH (a local .weights.h5) or --weights none") from None
        raise
    if resolved not in (None, "imagenet"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                base.load_weights(resolved)
            except ValueError:  # its message prints every mismatched weight array
                raise TrainError(f"{resolved} does not match --alpha {alpha}: MobileNetV2 "
                                 "weights are made for one width (a file named "
                                 "mobilenet_v2_1.0_* is alpha 1.0)") from None
        for w in caught:  # a load that worked keeps its warnings
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if resolved is None:
        # From scratch, BatchNorm's moving statistics must converge within the few hundred
        # steps of a small dataset; Keras' MobileNetV2 default (0.999) needs thousands, and
        # the model then predicts nonsense in inference mode.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    base.name = BACKBONE
    return base


def build_head(num_features: int, num_classes: int, dropout: float) -> keras.Model:
    """Dropout + Dense softmax on pooled features (trained first on cached features)."""
    features = keras.Input((num_features,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(features)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probability")(x)
    return keras.Model(features, out, name="head")


def build_mobilenet(num_classes: int, image_size: int = 224, alpha: float = 1.0,
                    weights: str = "imagenet", dropout: float = 0.2, ground: bool = True,
                    work_size: int | None = None
                    ) -> tuple[keras.Model, keras.Model, keras.Model]:
    """Return (model, backbone, head): raw pixels -> [Ground] -> [Resize] -> Rescaling ->
    MobileNetV2 -> head.

    `work_size` (default: `image_size`) is the side the backbone sees: the grounded image is
    resized to it inside the model, so the input, the stain mask and the preprocessing
    contract stay at `image_size`. Larger cells in pixels suit ImageNet features better
    (the leukocytes of a 224-px all4 image are ~25 px across, under one cell of the 7 x 7
    final feature map), at (work_size / image_size)^2 times the compute.
    """
    work_size = work_size or image_size
    backbone = build_backbone(work_size, alpha, weights)
    head = build_head(backbone.output_shape[-1], num_classes, dropout)
    pixels = keras.Input((image_size, image_size, 3), name="image")
    x = Ground(name="ground")(pixels) if ground else pixels
    if work_size != image_size:
        x = Resize(work_size, name="resize")(x)
    x = keras.layers.Rescaling(1.0 / NORM_STD, offset=-NORM_MEAN / NORM_STD, name="scale")(x)
    model = keras.Model(pixels, head(backbone(x)), name="hemalite_mobilenetv2")
    return model, backbone, head


def feature_extractor(model: keras.Model) -> keras.Model:
    """Raw pixels -> pooled backbone features: every layer before the head, in order."""
    steps = [model.get_layer(n) for n in (*PREPROCESSING, BACKBONE)
             if n in {layer.name for layer in model.layers}]
    return keras.Sequential(steps, name="features")


def build_cnn(num_classes: int, image_size: int = 224, dropout: float = 0.5,
              ground: bool = True) -> keras.Model:
    """The seed paper's baseline: 3x3 conv 32/64/128 with 2x2 max-pooling, dense 256."""
    layers = [keras.Input((image_size, image_size, 3), name="image"),
              *([Ground(name="ground")] if ground else []),
              keras.layers.Rescaling(1.0 / 255.0, name="scale")]
    for filters in (32, 64, 128):
        layers += [keras.layers.Conv2D(filters, 3, activation="relu", padding="same"),
                   keras.layers.MaxPooling2D(2)]
    layers += [keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"),
               keras.layers.Dropout(dropout),
               keras.layers.Dense(num_classes, activation="softmax", name="probability")]
    return keras.Sequential(layers, name="hemalite_cnn")


def fine_tune_start(backbone: keras.Model, from_layer: str) -> int:
    """The index of `from_layer` in the backbone; a one-line TrainError when it has none
    (checked as soon as the model is built, not after the head has trained)."""
    names = [layer.name for layer in backbone.layers]
    if from_layer not in names:
        raise TrainError(f"--fine-tune-from: no layer named {from_layer!r} in the backbone "
                         "(Conv1 = all of it, block_1_expand ... block_16_expand, Conv_1)")
    return names.index(from_layer)


def set_fine_tuning(backbone: keras.Model, from_layer: str) -> int:
    """Unfreeze the backbone from `from_layer` upwards (BatchNorm stays frozen); return count."""
    start = fine_tune_start(backbone, from_layer)
    backbone.trainable = True
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i >= start
    freeze_batchnorm(backbone)
    return sum(1 for layer in backbone.layers[start:] if layer.trainable)


def synchronise_batchnorm(model: keras.Model) -> int:
    """Make every trainable BatchNormalization use the global batch's statistics; count them.

    Keras 3 updates each replica's moving mean and variance from its own slice of the batch
    and never averages them (the variables have no aggregation), so with several replicas,
    on one machine or several, the copies drift apart and each worker's model predicts
    differently. Statistics all-reduced over the global batch keep every copy the same,
    and equal to what one machine would compute on that batch.
    """
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            count += synchronise_batchnorm(layer)
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            layer.synchronized = True
            count += 1
    return count
