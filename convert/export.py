"""Keras run -> .tflite variants (float32, float16, dynamic-range, full-integer int8).

Keras 3 models go through a SavedModel (`model.export`): TFLiteConverter.from_keras_model is
broken for Keras 3 on TF >= 2.16. Every variant gets standard TFLite metadata (labels,
input size, normalisation, citation) and is verified against the Keras model through the
same runtime code the edge uses.

Arrows: hemalite <- train <- convert, as STYLE.md draws them, plus one deliberate arrow
convert -> hemalite.edge.runtime (imported inside `verify` and `domain_check`): each variant
is verified, and its domain threshold set, by the very loader the device runs, not by a
second copy of it. The edge never imports convert or train, so the device stays free of
TensorFlow.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hemalite import DISCLAIMER, __version__
from hemalite import acquisition
from hemalite import domain as dom
from hemalite.contract import InputSpec, is_image_name, load_batch
from hemalite.convert.case_rule import with_case_rule
from hemalite.errors import HemaliteError
from hemalite.edge.assess import UNSURE_BELOW
from hemalite.files import read_json, write_bytes, write_json
from hemalite.metadata import ModelInfo, embed_metadata
from hemalite.metrics import agreement
from hemalite.train import data

log = logging.getLogger(__name__)
VARIANTS = ("float32", "float16", "dynamic", "int8")
OUTPUTS = ("probability", "domain", "cam", "embedding")  # in this order in every .tflite
CITATION = ("Data: Aria M, Ghaderzadeh M, Bashash D, Abolghasemi H, Asadi F, Hosseini A. "
            "Acute Lymphoblastic Leukemia (ALL) image dataset. Kaggle, 2021. "
            "doi:10.34740/KAGGLE/DSV/2175623. Ghaderzadeh M et al. Int J Intell Syst. "
            "2022;37:5113-5133. doi:10.1002/int.22753.")


class ConvertError(HemaliteError):
    """A run or calibration folder that cannot be converted (one clear line)."""


@dataclass(frozen=True)
class ConvertConfig:
    run_dir: str
    out: str = ""  # default: RUN_DIR/tflite
    variants: tuple[str, ...] = VARIANTS  # as `hemalite convert` with no variant flag
    io: str = "uint8"  # int8 model's input/output type: uint8, int8 or float32
    calib_size: int = 300
    calib_dir: str = ""  # default: the run's training split
    calib_jitter: float = 0.5  # share of calibration images through hemalite.shifts' jitter
    verify_split: str = "val"
    threshold: float = 0.97  # min int8 top-1 agreement with Keras
    force: bool = False
    seed: int = 0
    domain_dims: int = 64  # whitened feature dimensions of the domain check
    domain_acceptance: float = 0.995  # share of validation images each domain score accepts

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path(self.run_dir, "tflite"))


@dataclass
class Run:
    """What `hemalite train` left in a run directory."""

    path: Path
    model: object  # keras.Model
    labels: tuple[str, ...]
    spec: InputSpec
    config: dict

    def samples(self, split: str) -> list[data.Sample]:
        return data.read_manifest(self.path / "splits" / f"{split}.csv", self.labels)

    @property
    def data_dir(self) -> str:
        return self.config["data_dir"]


def load_run(run_dir: str | os.PathLike) -> Run:
    """Load model.keras, labels and config from a run directory, with clear errors."""
    import keras

    import hemalite.train.model  # noqa: F401  registers the Ground layer for loading

    path = Path(run_dir)
    if not path.is_dir():
        raise ConvertError(f"run directory not found: {path}")
    model_path = path / "model.keras"
    if not model_path.is_file():
        raise ConvertError(f"{path} has no model.keras: train first (`hemalite train`)")
    try:
        model = keras.models.load_model(model_path, compile=False)
    except (ValueError, OSError, KeyError, TypeError) as err:
        raise ConvertError(f"{model_path} is corrupt or unreadable: {err}") from None
    config = read_json(path / "config.json")
    labels = data.read_labels(path / "labels.txt")
    size = int(config.get("image_size", model.input_shape[1]))
    return Run(path, model, labels, InputSpec(size, size), config)


def stratified(samples: list[data.Sample], n: int, seed: int) -> list[data.Sample]:
    """n samples with each class in its training proportion (all of them if fewer)."""
    if n >= len(samples):
        return list(samples)
    rng = np.random.default_rng(seed)
    labels = np.array([s.label for s in samples])
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(n * len(idx) / len(samples)))
        picked += [samples[i] for i in rng.choice(idx, min(k, len(idx)), replace=False)]
    return sorted(picked, key=lambda s: s.path)


def calibration_images(run: Run, cfg: ConvertConfig) -> tuple[np.ndarray, dict]:
    """The representative dataset: training-split images (never test), stratified.

    With --calib-dir, images found anywhere under that folder instead. Pixels go through the
    same preprocess() as training and the edge. Undecodable files are skipped and counted.
    """
    if cfg.calib_dir:
        root = Path(cfg.calib_dir)
        files = sorted(p for p in root.rglob("*") if is_image_name(p.name)) if root.is_dir() else []
        if not files:
            raise ConvertError(f"calibration folder {root} has no images")
        rng = np.random.default_rng(cfg.seed)
        chosen = [files[i] for i in sorted(rng.permutation(len(files))[:cfg.calib_size])]
        source = str(root)
    else:
        samples = stratified(run.samples("train"), cfg.calib_size, cfg.seed)
        chosen = [Path(run.data_dir, s.path) for s in samples]
        source = "training split"
    images, _, skipped = load_batch(chosen, run.spec)
    if not len(images):
        raise ConvertError(f"no calibration image could be decoded ({len(skipped)} skipped)")
    jittered = jitter_share(images, cfg.calib_jitter, cfg.seed)
    return images, {"source": source, "size": len(images), "skipped": skipped,
                    "jittered": jittered}


def jitter_share(images: np.ndarray, share: float, seed: int) -> int:
    """Put `share` of the images (in place) through training's acquisition jitter, so the
    int8 activation ranges also cover the lamps, stains and objectives the model was
    trained to tolerate, not only this lab's; return how many."""
    from hemalite.shifts import random_acquisition

    if not 0.0 <= share <= 1.0:
        raise ConvertError(f"--calib-jitter must be between 0 and 1, not {share}")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(images))[:round(share * len(images))]
    for i in chosen:
        images[i] = random_acquisition(images[i], rng)
    return len(chosen)


def pin_input_range(calib: np.ndarray) -> np.ndarray:
    """Make the calibration input span exactly 0..255 (one pixel set to each end).

    The converter takes the input's quantisation from the calibration range; pinned to the
    full uint8 range, a uint8 input gets scale 1 and zero point 0, so the model takes the
    camera's pixels as they are. (all4's images already span 0..255, so there it changes
    nothing; the tests' small smooth images gave scale 0.93 unpinned.)
    """
    pinned = np.array(calib, dtype=np.uint8, copy=True)
    pinned[0, 0, 0, :] = 0
    pinned[-1, -1, -1, :] = 255
    return pinned


def export_saved_model(model, directory: str) -> None:
    """Keras 3 -> SavedModel, the converter's reliable input."""
    model.export(directory, format="tf_saved_model", verbose=False)


def has_backbone(model) -> bool:
    from hemalite.train.model import BACKBONE

    return BACKBONE in {layer.name for layer in model.layers}


def export_model(model, projection: tuple[np.ndarray, np.ndarray] | None = None):
    """The graph a .tflite computes, as a Keras model with named outputs.

    Always `probability` (first: MediaPipe and TFLite Support clients read that one). A
    MobileNetV2 run with a fitted domain projection adds `domain` (whitened pooled
    features, hemalite.domain) and `cam` (the class-activation maps: the last feature map
    times the head's weights, flattened rows x columns x classes), so heatmaps and the
    domain check cost no second model and no gradients.
    """
    import keras

    from hemalite.train.model import BACKBONE, PREPROCESSING

    if projection is None or not has_backbone(model):
        return keras.Model(model.inputs, {"probability": model.outputs[0]})
    names = {layer.name for layer in model.layers}
    backbone = model.get_layer(BACKBONE)
    dense = model.get_layer("head").get_layer("probability")
    maps = keras.Model(backbone.inputs, [backbone.get_layer("out_relu").output, backbone.output])
    pixels = keras.Input(model.input_shape[1:], name="image")
    x = pixels
    for name in PREPROCESSING:
        if name in names:
            x = model.get_layer(name)(x)
    fmap, pooled = maps(x)
    weights, bias = projection
    cam = keras.ops.einsum("bhwc,ck->bhwk", fmap, dense.kernel) + dense.bias
    rows, cols, classes = fmap.shape[1], fmap.shape[2], dense.kernel.shape[-1]
    return keras.Model(pixels, {
        "probability": dense(pooled),
        "domain": keras.ops.matmul(pooled, weights) + bias,
        "cam": keras.ops.reshape(cam, (-1, rows * cols * classes)),
        "embedding": pooled})


# Training images, and as many synthetic outliers, each variant's outlier score is fitted on.
OUTLIER_FIT_IMAGES = 700


def fit_domain(run: Run, cfg: ConvertConfig) -> tuple:
    """Fit the domain check on the training split: ((W, b), the check without its outlier
    score, thresholds and floor, and (training images, synthetic outliers)), from which
    domain_check fits the outlier score on each variant's own features and sets the
    thresholds and floor on validation images; (None, None, None) when the features do not
    vary enough to fit a check."""
    from hemalite.contract import preprocess
    from hemalite.train.model import feature_extractor

    x, y, _ = data.load_pixels(run.data_dir, run.samples("train"), run.spec, progress=False)
    features = feature_extractor(run.model).predict(x.astype(np.float32), batch_size=32,
                                                    verbose=0)
    if not dom.features_vary(features):
        log.warning("the model's features hardly differ between training images (is it "
                    "trained?): no domain check, no heatmaps in this conversion")
        return None, None, None
    weights, bias, means = dom.fit_whitening(features, y, cfg.domain_dims)
    measures = [acquisition.measure(img) for img in x]
    check = dom.DomainCheck(
        means=np.round(means, 5).tolist(), threshold=np.inf, acceptance=cfg.domain_acceptance,
        acquisition=acquisition.fit(measures).to_dict(),
        leukocytes=dom.stained_share(measures) >= 0.98)  # smears, not colour tests
    rng = np.random.default_rng(cfg.seed)
    inside = x[rng.permutation(len(x))[:OUTLIER_FIT_IMAGES]]
    outside = np.stack([preprocess(np.ascontiguousarray(o), run.spec)
                        for o in dom.synthetic_outliers(inside, rng)])
    return (weights, bias), check, (inside, outside)


def convert_variant(saved_model: str, variant: str, calib: np.ndarray | None = None,
                    io: str = "uint8", per_channel: bool = True, pin: bool = True) -> bytes:
    """One TFLite flatbuffer: float32, float16 weights, dynamic-range, or full-integer int8."""
    return make_converter(saved_model, variant, calib, io, per_channel, pin).convert()


def make_converter(saved_model: str, variant: str, calib: np.ndarray | None = None,
                   io: str = "uint8", per_channel: bool = True, pin: bool = True):
    """A configured TFLiteConverter (also what QuantizationDebugger takes)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        pinned = pin_input_range(calib) if pin else calib
        converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in pinned)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8,
                                          "float32": tf.float32}[io]
        converter.inference_output_type = converter.inference_input_type
        if not per_channel:  # the study's per-tensor setting; a private converter flag
            converter._experimental_disable_per_channel = True
    elif variant != "float32":
        raise ConvertError(f"unknown variant {variant!r} ({', '.join(VARIANTS)})")
    return converter


def model_info(run: Run, variant: str, calibration: dict | None, outputs=("probability",),
               files: dict | None = None) -> ModelInfo:
    arch = run.config.get("arch", "mobilenetv2")
    extra = {"variant": variant, "arch": arch, "alpha": run.config.get("alpha"),
             "trained_on": os.path.basename(os.path.normpath(run.data_dir)),
             "ground": bool(run.config.get("ground", False))}  # sees only the stain mask
    if calibration:
        extra["calibration"] = {k: v for k, v in calibration.items() if k != "skipped"}
    return ModelInfo(
        labels=run.labels, spec=run.spec, name=f"hemalite {arch} ({variant})",
        description=("Classifies peripheral blood smear images as " + ", ".join(run.labels)
                     + ". " + DISCLAIMER + " " + CITATION),
        version=__version__, author="hemalite", license="Apache-2.0", extra=extra,
        outputs=tuple(outputs), files=dict(files or {}))


def keras_probabilities(run: Run, x: np.ndarray) -> np.ndarray:
    return run.model.predict(x.astype(np.float32), batch_size=32, verbose=0)


def verify(paths: dict[str, Path], run: Run, x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Run each .tflite through the edge runtime; compare with the Keras model."""
    from hemalite.edge.runtime import load_model

    reference = keras_probabilities(run, x)
    rows = [{"variant": "keras", "bytes": None, "top1_agreement": 1.0, "max_abs_diff": 0.0,
             "accuracy": float((reference.argmax(1) == y).mean())}]
    float_bytes = None
    for variant, path in paths.items():
        model = load_model(path)
        probs = model.predict_batch(x)
        size = path.stat().st_size
        float_bytes = size if variant == "float32" else float_bytes
        rows.append({"variant": variant, "bytes": size, **agreement(probs, reference),
                     "accuracy": float((probs.argmax(1) == y).mean())})
    for row in rows:
        row["size_ratio"] = row["bytes"] / float_bytes if row["bytes"] and float_bytes else None
    return rows


def format_table(rows: list[dict], n: int, split: str) -> str:
    """The verification table as Markdown."""
    lines = [f"Verified on {n} {split}-split images against the Keras model:", "",
             "| variant | size (MB) | x float32 | top-1 agreement | max abs prob diff | accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:.2f}" if r["bytes"] else "-"
        ratio = f"{r['size_ratio']:.3f}" if r.get("size_ratio") else "-"
        lines.append(f"| {r['variant']} | {size} | {ratio} | {r['top1_agreement']:.4f} | "
                     f"{r['max_abs_diff']:.2e} | {r['accuracy']:.4f} |")
    return "\n".join(lines)


def variant_outputs(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, domain features) of a loaded .tflite for each image."""
    probs, z = [], []
    for image in x:
        probs.append(model.predict(image))
        z.append(model.get_output("domain").ravel())
    return np.array(probs), np.array(z)


def domain_check(path: Path, x: np.ndarray, y: np.ndarray, fitted: dom.DomainCheck,
                 outlier_fit: tuple[np.ndarray, np.ndarray]) -> dom.DomainCheck:
    """Complete the check for one variant from its own outputs (int8 features are not float
    features: each variant gets its own): the outlier score fitted on `outlier_fit`
    (training images, synthetic outliers; measured on the int8 model of row F, fitting it on
    int8 rather than float features cut strong shifts accepted as malignant from 14 to 8 %),
    then the thresholds (the feature score's also on those training images) and the confidence
    floor on validation images `x`, `y`. The floor spends what is left of the referral budget
    (hemalite.domain.operating_floor)."""
    from hemalite.edge.runtime import load_model

    model = load_model(path)
    check = dataclasses.replace(fitted)
    z_train = variant_outputs(model, outlier_fit[0])[1]
    check.outlier = dom.fit_outlier(z_train, variant_outputs(model, outlier_fit[1])[1])
    probs, z = variant_outputs(model, x)
    scores = dom.feature_score(z, np.asarray(check.means))
    # The feature score accepts `acceptance` of the training images as well as of the
    # validation split's: a quantile of 261 images alone is noisy (session 19: the bundled
    # models' thresholds from validation alone were exceeded by 1.5-2.3 % of training images
    # and 0.4-2.7 % of test images, against the 0.5 % stated). The outlier score's is set on
    # validation only: it was fitted on those training images, which it scores low.
    check.threshold = float(max(
        np.quantile(scores, check.acceptance),
        np.quantile(dom.feature_score(z_train, np.asarray(check.means)), check.acceptance)))
    referred = scores > check.threshold
    if check.outlier:
        outlier = np.array([check.outlier_score(v) for v in z])
        check.outlier["threshold"] = float(np.quantile(outlier, check.acceptance))
        referred |= outlier > check.outlier["threshold"]
    measures = [acquisition.measure(image) for image in x]
    referred |= [bool(check.acquisition_faults(m)) or (check.leukocytes and not m["cells"])
                 for m in measures]
    acq = check.acquisition_check  # assess.near_limit refers an unsure call near a limit
    referred |= (probs.max(1) < UNSURE_BELOW) & np.array(
        [bool(acq) and acq.is_near_limit(m) for m in measures], dtype=bool)
    check.min_confidence = dom.operating_floor(probs.max(1), probs.argmax(1) == y, referred)
    return check


def write_verification(path: Path, rows: list[dict], split: str, n: int) -> None:
    """verification.json, one row per variant: converting some variants replaces their rows
    and keeps the others' (while their .tflite is still there)."""
    kept = {}
    if path.is_file():
        for row in read_json(path).get("rows", []):
            if (path.parent / f"model_{row['variant']}.tflite").is_file():
                kept[row["variant"]] = row
    kept.update({r["variant"]: {**r, "split": split, "n": n} for r in rows})
    ordered = [kept[v] for v in ("keras", *VARIANTS) if v in kept]
    write_json(path, {"split": split, "n": n, "rows": ordered})


def _writable(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as err:
        raise ConvertError(f"cannot write to {out}: {err.strerror}") from None
    return out


def convert(cfg: ConvertConfig) -> dict:
    """Convert, embed metadata and the domain check, verify:
    {'rows', 'table', 'failed', 'paths', 'calibration'}."""
    run = load_run(cfg.run_dir)
    out = _writable(cfg.out_dir)
    calib, calibration = (None, None)
    if "int8" in cfg.variants:
        calib, calibration = calibration_images(run, cfg)
        for line in calibration["skipped"]:
            log.warning("calibration image skipped: %s", line)
    projection = fitted = outlier_fit = None
    if has_backbone(run.model):
        log.info("fitting the domain check on the training split")
        projection, fitted, outlier_fit = fit_domain(run, cfg)
    exported = export_model(run.model, projection)
    outputs = OUTPUTS if projection is not None else OUTPUTS[:1]
    x_val, y_val, _ = data.load_pixels(run.data_dir, run.samples("val"), run.spec,
                                       progress=False)
    paths = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(exported, tmp)
        for variant in [v for v in VARIANTS if v in cfg.variants]:
            log.info("converting %s", variant)
            flat = convert_variant(tmp, variant, calib, cfg.io)
            info = model_info(run, variant, calibration if variant == "int8" else None, outputs)
            paths[variant] = out / f"model_{variant}.tflite"
            write_bytes(paths[variant], embed_metadata(flat, info))
            if fitted is not None:
                check = domain_check(paths[variant], x_val, y_val, fitted, outlier_fit)
                info = dataclasses.replace(info, files={dom.DOMAIN_FILE: check.to_bytes()})
                write_bytes(paths[variant], embed_metadata(flat, info))
            info = with_case_rule(info, paths[variant], x_val, y_val, cfg.seed)  # case.json
            write_bytes(paths[variant], embed_metadata(flat, info))
    if cfg.verify_split == "val":
        x, y = x_val, y_val
    else:
        x, y, _ = data.load_pixels(run.data_dir, run.samples(cfg.verify_split), run.spec,
                                   progress=False)
    rows = verify(paths, run, x, y)
    failed = [r for r in rows if r["variant"] == "int8" and r["top1_agreement"] < cfg.threshold]
    if failed and not cfg.force:
        paths["int8"].unlink()
    table = format_table(rows, len(x), cfg.verify_split)
    write_json(out / "convert_config.json", {**dataclasses.asdict(cfg), "hemalite": __version__,
                                             "calibration": calibration})
    write_verification(out / "verification.json", rows, cfg.verify_split, len(x))
    return {"rows": rows, "table": table, "failed": bool(failed), "paths": paths,
            "calibration": calibration}
