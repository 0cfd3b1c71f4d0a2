r"""Leukocyte-centred crops (issue #10's untried candidate): one prediction per stained blob,
combined per image. An experiment on the validation split, not part of hemalite.

    .venv/bin/python scripts/experiments/cell_crops.py runs/crops2 --split-from runs/cellsS \
        --weights ../shared/weights/mobilenet_v2_1.0_224_imagenet_no_top.weights.h5 \
        --crop 64 --size 128
    .venv/bin/python scripts/experiments/cell_crops.py runs/crops2 --evaluate-only \
        --with runs/cellsS

Each blob of the stain mask (hemalite.cells.find_cells, largest first) gives a fixed CROP x
CROP window of the grounded image (background grey, as the bundled model sees it) centred on
the blob's box and upsampled to SIZE x SIZE (2x; a median blob is 32 px across at 224, and
a blob wider than the window, touching cells, is cut at its edges). Every window gets its
image's label; the image's answer is the mean log-probability of its windows (the largest
TRAIN_CELLS blobs in training, EVAL_CELLS when evaluating). The acquisition jitter
(hemalite.shifts.random_acquisition) is drawn on the whole image before cropping, so another
objective changes the cells' size in the window as it would on a microscope. Otherwise the
bundled run W's recipe: head on cached features, then fine-tuning from block_2_expand at
1e-4 for 10 epochs with the paper's augmentation, the plateau schedule and early stopping on
validation loss (here the windows' loss).

The report: validation accuracy per image as is and under every audit shift (the rows of
val_shifts.py), the images left without a blob, and the windows' own accuracy; `--with RUN`
adds a whole-image run's accuracy and the two averaged. `--evaluate-only` reads the window
geometry from the run's geometry.json (--crop and --size are for training). `--init-from RUN`
starts the windows' backbone from a whole-image run's fine-tuned one (session 13's C8, C9);
`--epochs 0` trains the head only. The test split
is never read. The windows are resized by the contract's one resize
(hemalite.contract.preprocess; the ablation's runs C1-C4 trained on OpenCV's resize).

In the notebook, benchmarks/reports/grounding_ablation.md: the Keras float rows of sessions
12 and 13, C1-C9 alone and beside W (`--evaluate-only --with runs/cellsS`); their int8 rows
come from crops_int8.py.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hemalite import cells, shifts
from hemalite.contract import InputSpec, preprocess
from hemalite.convert.export import load_run
from hemalite.metadata import embed_metadata
from hemalite.train import data

CROP = 48  # px of the 224-px image around each blob's centre
SIZE = 96  # px the backbone sees: 2x
TRAIN_CELLS = 8  # the largest blobs of a training image (it has 7.7 on average, 1-24)
EVAL_CELLS = 16
HUE = 25.0  # degrees: --hue-p's extra hue draw, row E's range (the jitter's own is +-20)


def cell_crops(rgb: np.ndarray, max_cells: int) -> np.ndarray:
    """(n, SIZE, SIZE, 3) uint8 crops of the grounded image around its n largest blobs."""
    soft = cells.soft_mask(rgb)
    found = cells.find_cells(rgb, mask=soft >= 0.5)[:max_cells]
    if not found:
        return np.zeros((0, SIZE, SIZE, 3), np.uint8)
    grounded = np.clip(np.round(rgb * soft[..., None] + cells.BACKGROUND * (1 - soft[..., None])),
                       0, 255).astype(np.uint8)
    half = CROP // 2
    padded = np.pad(grounded, ((half, half), (half, half), (0, 0)),
                    constant_values=cells.BACKGROUND)
    out = []
    for c in found:
        cx, cy = c.x + c.width // 2, c.y + c.height // 2  # padded coordinates: + half - half
        out.append(preprocess(padded[cy:cy + CROP, cx:cx + CROP], InputSpec(SIZE, SIZE)))
    return np.stack(out)


def crops_of(images: np.ndarray, labels: np.ndarray, max_cells: int):
    """All crops of a set of images, their labels and the index of their image."""
    xs, ys, owner = [], [], []
    for i, (img, lab) in enumerate(zip(images, labels)):
        c = cell_crops(img, max_cells)
        xs.append(c)
        ys += [lab] * len(c)
        owner += [i] * len(c)
    return np.concatenate(xs), np.array(ys, int), np.array(owner, int)


def image_probs(model, images: np.ndarray, labels: np.ndarray, classes: int):
    """(per-image probabilities: the crops' mean log-probability, softmaxed; a row of zeros
    for an image without a blob, which is referred and counted wrong), the number of such
    images, and the crops' own accuracy."""
    xc, yc, owner = crops_of(images, labels, EVAL_CELLS)
    probs = model.predict(xc.astype(np.float32), batch_size=64, verbose=0)
    total = np.zeros((len(images), classes))
    np.add.at(total, owner, np.log(np.clip(probs, 1e-7, 1.0)))
    counts = np.bincount(owner, minlength=len(images))
    mean = total / np.maximum(counts, 1)[:, None]
    image = np.exp(mean - mean.max(1, keepdims=True))
    image = np.where(counts[:, None] > 0, image / image.sum(1, keepdims=True), 0.0)
    return image, int((counts == 0).sum()), float((probs.argmax(1) == yc).mean())


def right(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per image: the top class is the label (an all-zero row, no blob, is wrong)."""
    return (probs.argmax(1) == labels) & (probs.max(1) > 0)


def to_tflite(out: Path, variant: str, calib: np.ndarray | None = None) -> Path:
    """The run's windows model as out/tflite/crops_<variant>.tflite, through hemalite's own
    export, converter and metadata (load it with hemalite.edge.runtime.load_model)."""
    import tempfile

    import keras

    from hemalite.convert import export

    split = load_run(Path(out / "split_from.txt").read_text().strip())
    run = export.Run(out, keras.models.load_model(out / "model.keras", compile=False),
                     split.labels, InputSpec(SIZE, SIZE), split.config)
    path = out / "tflite" / f"crops_{variant}.tflite"
    path.parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as saved:
        export.export_saved_model(export.export_model(run.model), saved)
        flat = export.convert_variant(saved, variant, calib)
    path.write_bytes(embed_metadata(flat, export.model_info(run, variant, None)))
    return path


def build(weights: str, classes: int):
    import keras

    from hemalite.contract import NORM_MEAN, NORM_STD
    from hemalite.train import model as models

    backbone = models.build_backbone(SIZE, 1.0, weights)
    models.freeze_batchnorm(backbone)
    head = models.build_head(backbone.output_shape[-1], classes, 0.2)
    pixels = keras.Input((SIZE, SIZE, 3), name="crop")
    x = keras.layers.Rescaling(1.0 / NORM_STD, offset=-NORM_MEAN / NORM_STD, name="scale")(pixels)
    return keras.Model(pixels, head(backbone(x)), name="crops"), backbone, head


def train(args) -> None:
    """Train a windows model into args.out: the head on cached features, then fine-tuning."""
    import keras

    from hemalite.train.datasets import class_weights

    keras.utils.set_random_seed(args.seed)  # initialisation too, not only the jitter
    split = load_run(args.split_from)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("\n".join(split.labels) + "\n")
    (out / "split_from.txt").write_text(str(args.split_from) + "\n")
    classes = len(split.labels)
    x_tr, y_tr, _ = data.load_pixels(split.data_dir, split.samples("train"), split.spec, False)
    x_va, y_va, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, False)
    start = time.time()
    model, backbone, head = build(args.weights, classes)
    if args.init_from:  # start from a whole-image run's fine-tuned backbone, not ImageNet's
        from hemalite.train.model import BACKBONE
        backbone.set_weights(load_run(args.init_from).model.get_layer(BACKBONE).get_weights())
    xc_tr, yc_tr, _ = crops_of(x_tr, y_tr, TRAIN_CELLS)
    xc_va, yc_va, _ = crops_of(x_va, y_va, EVAL_CELLS)
    weights = class_weights(yc_tr, classes)
    print(f"crops: train {len(xc_tr)} from {len(x_tr)} images, val {len(xc_va)}", flush=True)
    epochs = fit_head(model, backbone, head, (xc_tr, yc_tr), (xc_va, yc_va), weights)
    probs, _, crop_acc = image_probs(model, x_va, y_va, classes)
    print(f"head: {epochs} epochs, val crops {crop_acc:.3f}, images "
          f"{right(probs, y_va).mean():.3f} ({time.time() - start:.0f} s)", flush=True)
    fine_tune(model, backbone, (x_tr, y_tr), (xc_va, yc_va), (x_va, y_va), weights, args,
              start)
    model.save(out / "model.keras")
    print(f"trained in {time.time() - start:.1f} s", flush=True)


def recipe_callbacks() -> list:
    """The bundled recipe's: cut the rate when validation loss stalls, stop after 5 epochs
    without a better one and keep the best."""
    import keras

    return [keras.callbacks.ReduceLROnPlateau("val_loss", 0.3, 2, min_lr=1e-6),
            keras.callbacks.EarlyStopping("val_loss", patience=5, restore_best_weights=True)]


def fit_head(model, backbone, head, train_crops, val_crops, weights: dict) -> int:
    """Phase 1: the head on the frozen backbone's features of the windows, computed once;
    the number of epochs it ran."""
    import keras

    (xc_tr, yc_tr), (xc_va, yc_va) = train_crops, val_crops
    extractor = keras.Sequential([model.get_layer("scale"), backbone])
    f_tr = extractor.predict(xc_tr.astype(np.float32), batch_size=64, verbose=0)
    f_va = extractor.predict(xc_va.astype(np.float32), batch_size=64, verbose=0)
    head.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                 metrics=["accuracy"])
    hist = head.fit(f_tr, yc_tr, validation_data=(f_va, yc_va), epochs=50, batch_size=32,
                    class_weight=weights, verbose=0, callbacks=recipe_callbacks())
    return len(hist.history["loss"])


def fine_tune(model, backbone, train_images, val_crops, val_images, weights: dict, args,
              start: float) -> None:
    """Phase 2: the backbone from block_2_expand up at 1e-4, on windows cut afresh from
    jittered training images every epoch; early stopping on the windows' validation loss,
    the images' accuracy printed after each epoch."""
    import keras

    from hemalite.train import model as models
    from hemalite.train.datasets import augmenter

    models.set_fine_tuning(backbone, "block_2_expand")
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    windows = jittered_windows(*train_images, weights, augmenter(args.seed), args.seed,
                               args.hue_p)
    xc_va, yc_va = val_crops
    model.fit(windows, validation_data=(xc_va.astype(np.float32), yc_va), epochs=args.epochs,
              verbose=0, callbacks=[image_accuracy(*val_images, len(weights), start),
                                    *recipe_callbacks()])


def jittered_windows(images, labels, weights: dict, augment, seed: int, hue_p: float):
    """A keras PyDataset: every epoch each training image through a new random acquisition
    (and, with hue_p, row E's extra hue draw), then cropped; batches of 32 windows through
    the paper's augmentation, with the class weights as sample weights."""
    import keras

    class Jittered(keras.utils.PyDataset):
        """The jitter changes how many blobs are found, but Keras reads the number of steps
        once: it stays the first draw's, and an epoch with fewer windows wraps around.
        (Before this, C1-C3 of the ablation ran with a length that changed: a shorter
        epoch ended early with Keras's "ran out of data", a longer one dropped its tail.)
        """

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()
            self.steps = -(-len(self.x) // 32)

        def on_epoch_end(self):
            jittered = np.stack([self.jitter(img) for img in images])
            self.x, self.y, _ = crops_of(jittered, labels, TRAIN_CELLS)
            self.order = self.rng.permutation(len(self.x))

        def jitter(self, img):
            out = shifts.random_acquisition(img, self.rng)
            if hue_p and self.rng.random() < hue_p:  # row E's extra hue draw
                out = shifts.hue(out, self.rng.uniform(-HUE, HUE))
            return out

        def __len__(self):
            return self.steps

        def __getitem__(self, i):
            idx = self.order[np.arange(i * 32, (i + 1) * 32) % len(self.x)]
            batch = augment(self.x[idx].astype(np.float32), training=True)
            w = np.array([weights[c] for c in self.y[idx]], np.float32)
            return np.clip(np.asarray(batch), 0, 255), self.y[idx], w
    return Jittered()


def image_accuracy(images, labels, classes: int, start: float):
    """A callback: validation accuracy per image (its windows combined) after each epoch,
    logged as val_image_accuracy and printed with the epoch's other numbers."""
    import keras

    class ImageAccuracy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probs, _, _ = image_probs(self.model, images, labels, classes)
            logs["val_image_accuracy"] = float(right(probs, labels).mean())
            print(f"epoch {epoch + 1}: {json.dumps({k: round(float(v), 4) for k, v in logs.items()})}"
                  f" ({time.time() - start:.0f} s)", flush=True)
    return ImageAccuracy()


def evaluate(out: Path, whole: str | None) -> None:
    """Validation accuracy per image, as is and under every audit shift; with `whole` (a
    whole-image run, e.g. the bundled W), also that run's and the two averaged."""
    import keras

    model = keras.models.load_model(out / "model.keras", compile=False)
    split = load_run(Path(out / "split_from.txt").read_text().strip())
    other = load_run(whole) if whole else None
    classes = len(split.labels)
    x, y, _ = data.load_pixels(split.data_dir, split.samples("val"), split.spec, False)
    cases = [("as is", None)] + [(shifts.shift_name(n, v), (n, v)) for n, v in shifts.AUDIT_SHIFTS]
    rows = {"crops": {}, "whole": {}, "both": {}}
    for name, shift in cases:
        xs = x if shift is None else np.stack([shifts.apply_shift(img, *shift) for img in x])
        probs, none, crop_acc = image_probs(model, xs, y, classes)
        rows["crops"][name] = 100 * float(right(probs, y).mean())
        line = f"{name:18s} crops {rows['crops'][name]:5.1f}"
        if other is not None:
            p_whole = other.model.predict(xs.astype(np.float32), batch_size=32, verbose=0)
            rows["whole"][name] = 100 * float(right(p_whole, y).mean())
            rows["both"][name] = 100 * float(right(probs + p_whole, y).mean())
            line += f"  whole {rows['whole'][name]:5.1f}  both {rows['both'][name]:5.1f}"
        print(f"{line}   (no blob {none}, crops alone {100 * crop_acc:.1f})", flush=True)
    for kind, row in rows.items():
        shifted = [v for k, v in row.items() if k != "as is"]
        if shifted:
            print(f"{kind}: as is {row['as is']:.1f}, mean of the {len(shifted)} shifts "
                  f"{np.mean(shifted):.2f}, worst {min(shifted):.1f}")
    erased = np.stack([shifts.erase_leukocytes(img) for img in x])
    probs, none, _ = image_probs(model, erased, y, classes)
    kept = probs.max(1) > 0
    print(f"leukocytes erased: {none} of {len(y)} without a blob (referred); right on "
          f"{right(probs, y)[kept].sum()} of the {kept.sum()} others")
    (out / "val_shifts.json").write_text(json.dumps(rows, indent=1) + "\n")


def main() -> None:
    global CROP, SIZE
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--split-from", default="runs/cellsS",
                        help="a run whose splits (and data folder) to use")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--crop", type=int, default=CROP, help="px of the 224-px image")
    parser.add_argument("--size", type=int, default=SIZE, help="px the backbone sees")
    parser.add_argument("--hue-p", type=float, default=0.0,
                        help="share of training images given an extra hue shift (+-25 deg)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="a whole-image run whose fine-tuned backbone to start from")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--with", dest="whole", metavar="RUN",
                        help="also a whole-image run (e.g. runs/cellsS), and the two averaged")
    args = parser.parse_args()
    out = Path(args.out)
    if args.evaluate_only:  # the geometry the run was trained with
        geometry = json.loads((out / "geometry.json").read_text())
        CROP, SIZE = geometry["crop"], geometry["size"]
    else:
        CROP, SIZE = args.crop, args.size
        out.mkdir(parents=True, exist_ok=True)
        (out / "geometry.json").write_text(json.dumps({"crop": CROP, "size": SIZE}) + "\n")
        train(args)
    evaluate(out, args.whole)


if __name__ == "__main__":
    main()
