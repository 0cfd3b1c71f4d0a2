"""The cell-grounded graph: the stain mask inside a quantised .tflite, the domain check fitted
by convert and carried by the model, and the reasons edge-classify gives for a REFER."""
from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hemalite import cells
from hemalite.contract import preprocess
from hemalite import domain as dom
from hemalite.edge import runtime
from hemalite.edge.assess import assess, read_cam
from hemalite.edge.cli import classify_command
from tests.helpers import real_images


@pytest.mark.slow
@pytest.mark.tensorflow
def test_ground_layer_runs_in_int8_and_matches_the_numpy_mask():
    import keras
    import tensorflow as tf

    from hemalite.convert.export import export_saved_model
    from hemalite.train.model import Ground

    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((96, 96)))
                       for p in real_images(2)])
    pixels = keras.Input((96, 96, 3), name="image")
    model = keras.Model(pixels, {"probability": Ground()(pixels)})
    np.testing.assert_allclose(np.asarray(model(images.astype("float32"))["probability"]),
                               [cells.neutralise_background(i) for i in images], atol=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([i[None].astype(np.float32)] for i in images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
        flat = converter.convert()
    interpreter, _, _ = runtime.load_runtime()
    it = interpreter(model_content=flat)
    it.allocate_tensors()
    for image in images:  # comparison ops would abort here; arithmetic runs
        it.set_tensor(it.get_input_details()[0]["index"], image[None])
        it.invoke()
        out = it.get_output_details()[0]
        scale, zero = out["quantization"]
        got = (it.get_tensor(out["index"])[0].astype(float) - zero) * scale
        expected = cells.neutralise_background(image).astype(float)
        assert np.mean(np.abs(got - expected) <= 4) > 0.97  # int8 steps of ~1 grey level


@pytest.mark.tensorflow
def test_the_mask_works_on_whole_blocks_so_a_side_must_be_a_multiple_of_four(tmp_path):
    from hemalite.train.data import TrainError
    from hemalite.train.fit import TrainConfig

    with pytest.raises(TrainError, match="multiple of 4"):
        TrainConfig(data_dir=str(tmp_path), out=str(tmp_path / "run"), image_size=230)
    TrainConfig(data_dir=str(tmp_path), out=str(tmp_path / "run"), image_size=230,
                ground=False)  # no mask, no constraint


def test_features_that_do_not_vary_are_not_whitened():
    rng = np.random.default_rng(0)
    trained = rng.normal(1.0, 0.5, (50, 16))
    untrained = 0.006 + rng.normal(0, 1e-9, (50, 16))  # a 1-epoch model from scratch
    assert dom.features_vary(trained) and not dom.features_vary(untrained)


def test_fit_whitening_gives_unit_within_class_covariance():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 200)
    f = rng.normal(0, 1, (600, 20)) @ rng.normal(0, 1, (20, 20)) + y[:, None] * 3.0
    w, b, means = dom.fit_whitening(f, y, dims=8, shrinkage=0.0)
    z = f @ w + b
    resid = z - means[y]
    np.testing.assert_allclose(np.cov(resid, rowvar=False), np.eye(8), atol=0.05)
    far = f[:5] + 50.0
    assert dom.feature_score(far @ w + b, means).min() > dom.feature_score(z, means).max()


def test_recommended_floor_trades_a_little_coverage_for_accuracy():
    conf = np.array([0.99] * 95 + [0.6, 0.55, 0.52, 0.51, 0.5])
    correct = np.array([True] * 95 + [True, False, False, False, True])
    floor = dom.recommend_floor(conf, correct, min_coverage=0.96)
    assert floor == pytest.approx(0.6)  # keeps 96 %, drops all three errors
    assert dom.recommend_floor(conf, np.ones(100, bool)) == 0.0  # nothing to gain


def test_the_operating_floor_spends_only_what_the_other_reasons_left_of_the_budget():
    conf = np.array([0.99] * 95 + [0.6, 0.55, 0.52, 0.51, 0.5])
    correct = np.array([True] * 95 + [True, False, False, False, True])
    nothing_else = np.zeros(100, bool)
    assert dom.operating_floor(conf, correct, nothing_else, budget=0.045) == pytest.approx(0.6)
    one_out = nothing_else.copy()
    one_out[0] = True  # one image already out of domain: 3.5 % left, the floor drops only two
    assert dom.operating_floor(conf, correct, one_out, budget=0.045) == pytest.approx(0.55)
    assert dom.operating_floor(conf, correct, np.arange(100) < 4, budget=0.045) == 0.0


@pytest.mark.slow
@pytest.mark.tensorflow
def test_domain_check_is_fitted_on_training_data_and_travels_in_the_model(tiny_run, tiny_tflite):
    from hemalite.convert.export import ConvertConfig, fit_domain, load_run, variant_outputs
    from hemalite.train import data
    from hemalite.train.model import feature_extractor

    run = load_run(tiny_run)
    x, y, _ = data.load_pixels(run.data_dir, run.samples("train"), run.spec, progress=False)
    features = feature_extractor(run.model).predict(x.astype("float32"), verbose=0)
    _, _, means = dom.fit_whitening(features, y)
    _, _, (inside, outside) = fit_domain(run, ConvertConfig(run_dir=str(tiny_run)))
    assert all(img.tobytes() in {t.tobytes() for t in x} for img in inside)
    for variant in ("float32", "int8"):
        model = runtime.load_model(tiny_tflite[variant])
        check = model.domain
        assert model.info.outputs == ("probability", "domain", "cam", "embedding")
        np.testing.assert_allclose(check.means, means, atol=1e-4)  # train split, nothing else
        assert check.acceptance == ConvertConfig.domain_acceptance and check.threshold > 0
        assert set(check.outlier) == {"weights", "bias", "threshold"}
        assert len(check.outlier["weights"]) == len(check.means[0])
        assert not check.leukocytes  # colour squares: no stain, so no no-leukocyte rule
        # the outlier score is fitted on this variant's own features of training images
        own = dom.fit_outlier(variant_outputs(model, inside)[1],
                              variant_outputs(model, outside)[1])
        np.testing.assert_allclose(check.outlier["weights"], own["weights"], atol=1e-5)
        pixels = x[0]
        a = assess(model, pixels)
        assert a.domain_score is not None and read_cam(model, 3).shape[-1] == 3


def test_cam_of_float_and_int8_agree_on_the_bundled_model():
    float_model = runtime.load_model(_bundled("hemalite_float32.tflite"))
    int8_model = runtime.load_model(_bundled("hemalite_int8.tflite"))
    if not float_model.has_output("cam"):
        pytest.skip("the bundled model predates the cam output")
    corr = []
    for path in real_images(3):  # int8 steps move single cells of a 7 x 7 map: judge many
        pixels = preprocess(np.asarray(Image.open(path).convert("RGB")), int8_model.info.spec)
        a, b = assess(float_model, pixels), assess(int8_model, pixels)
        label = int(a.probabilities.argmax())
        corr.append(np.corrcoef(a.cam[..., label].ravel(), b.cam[..., label].ravel())[0, 1])
    assert np.median(corr) > 0.9 and min(corr) > 0.5, np.round(corr, 3)


def _bundled(name: str) -> str:
    from importlib import resources

    return str(resources.files("hemalite") / "models" / name)


def test_each_reason_appears_where_it_should(tmp_path):
    model = runtime.load_model(_bundled("hemalite_int8.tflite"))
    if model.domain is None:
        pytest.skip("the bundled model predates the domain check")
    # an Early smear: Benign is the model's weak class, where one runtime's int8 kernels
    # (tflite-runtime 2.14) put a smear under the floor that another's (LiteRT 2.3) accepts
    smear = next(p for p in real_images(1) if p.parent.name == "Early")
    Image.new("RGB", (224, 224), (250, 250, 250)).save(tmp_path / "blank.png")
    rng = np.random.default_rng(0)
    # an everyday scene: sky, grass and a red roof, not a smear
    photo = np.zeros((224, 224, 3), np.uint8)
    photo[:90] = (120, 170, 230)
    photo[90:] = (60, 140, 50)
    photo[60:120, 80:160] = (180, 40, 30)
    photo = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    csv_path = tmp_path / "out.csv"
    jsonl_path = tmp_path / "out.jsonl"
    result = CliRunner().invoke(classify_command, [
        str(tmp_path / "blank.png"), str(tmp_path / "photo.png"), str(smear),
        "--csv", str(csv_path), "--jsonl", str(jsonl_path)])
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in map(json.loads, jsonl_path.read_text().splitlines())}
    assert rows["blank.png"]["reason"] == dom.NO_LEUKOCYTE
    assert rows["photo.png"]["label"] == "REFER"  # not a smear: its lamp, stain or features
    assert rows[smear.name]["reason"] is None and rows[smear.name]["label"] == smear.parent.name
    header = csv_path.read_text().splitlines()[0].split(",")
    assert "reason" in header
    assert "best guess" in result.output and "no-leukocyte" in result.output


def test_heatmap_panels_have_the_image_size(tmp_path):
    model = runtime.load_model(_bundled("hemalite_int8.tflite"))
    if not model.has_output("cam"):
        pytest.skip("the bundled model predates the cam output")
    src = real_images(1)[0]
    big = tmp_path / "big.jpg"
    Image.open(src).resize((300, 260)).save(big)
    out = tmp_path / "heat"
    result = CliRunner().invoke(classify_command, [str(big), str(src), "--heatmaps", str(out)])
    assert result.exit_code == 0, result.output
    panels = sorted(out.glob("*.png"))
    assert len(panels) == 2
    sizes = {p.name.split(".")[0]: Image.open(p).size for p in panels}
    assert sizes["big"] == (3 * 300, 260)
    assert sizes[src.stem] == (3 * 224, 224)


@pytest.mark.slow
@pytest.mark.tensorflow
def test_a_grounded_run_loads_in_a_fresh_process(tmp_path):
    """convert runs in another process than train: the Ground layer must deserialise there."""
    import subprocess
    import sys

    import keras

    from hemalite.train.model import Ground

    pixels = keras.Input((32, 32, 3), name="image")
    out = keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(Ground(name="ground")(pixels)))
    keras.Model(pixels, out).save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 32, "data_dir": "."}))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    code = ("import sys; from hemalite.convert.export import load_run; "
            "print(load_run(sys.argv[1]).model.get_layer('ground').__class__.__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("Ground")


@pytest.mark.tensorflow
def test_a_grounded_model_cannot_use_a_pixel_outside_the_mask():
    """The gradient of the Ground layer's output w.r.t. every pixel the mask leaves out is
    zero: no evidence can come from there, which is why heatmaps of grounded models are
    drawn on the mask only (hemalite.edge.assess.visible_mask)."""
    import tensorflow as tf

    from hemalite.train.model import Ground

    image = np.asarray(Image.open(real_images(1)[0]).convert("RGB").resize((224, 224)))
    x = tf.constant(image[None].astype("float32"))
    weights = tf.random.stateless_normal((1, 224, 224, 3), seed=(1, 2))
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = tf.reduce_sum(Ground()(x) * weights)
    grad = np.abs(tape.gradient(out, x).numpy()[0]).sum(-1)
    visible = cells.soft_mask(image)
    assert 0.02 < (visible > 0).mean() < 0.6  # a real smear: some cells, mostly background
    assert grad[visible == 0].max() == 0.0
    assert grad[visible == 1].min() > 0.0


def test_a_grounded_heatmap_stays_on_the_visible_pixels():
    from hemalite.edge.assess import heatmap, heatmap_mass

    cam = np.random.default_rng(0).uniform(0.1, 1.0, (7, 7, 4)).astype(np.float32)
    visible = np.zeros((224, 224), np.float32)
    visible[40:90, 100:160] = 1.0
    heat = heatmap(cam, 2, (448, 448), visible)  # visible resized with the heatmap
    assert heat.max() == pytest.approx(1.0)
    assert heat[:60].max() == 0.0 and heat[90:170, 210:310].min() > 0.0
    region = np.zeros((224, 224), bool)
    region[40:90, 100:160] = True
    assert heatmap_mass(cam, 2, region, visible) == pytest.approx(1.0)
    assert heatmap_mass(cam, 2, region) < 0.2  # the 7 x 7 map alone spreads everywhere


def test_synthetic_outliers_are_images_of_every_kind_from_real_smears():
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224)))
                       for p in real_images(2)])
    made = dom.synthetic_outliers(np.repeat(images, 12, axis=0), np.random.default_rng(0))
    assert len(made) >= 20 and all(m.ndim == 3 and m.dtype == np.uint8 for m in made)
    sizes = {m.shape[:2] for m in made}
    assert (224, 224) in sizes and len(sizes) > 1  # shifts keep the size, close-ups do not
    assert not any(np.array_equal(m, img) for m in made for img in images)


def test_the_outlier_score_separates_what_it_was_fitted_on_and_travels_as_json():
    rng = np.random.default_rng(0)
    z_in = rng.normal(0, 1, (300, 8))
    z_out = rng.normal(0, 1, (300, 8)) + np.r_[4.0, np.zeros(7)]
    check = dom.DomainCheck(means=[[0.0] * 8], threshold=1.0, acceptance=0.99,
                            outlier=dom.fit_outlier(z_in, z_out))
    check.outlier["threshold"] = 0.0
    again = dom.DomainCheck.from_bytes(check.to_bytes())
    assert again.outlier_score(np.r_[5.0, np.zeros(7)]) > 0 > again.outlier_score(np.zeros(8))
    assert dom.DomainCheck(means=[[0.0]], threshold=1.0, acceptance=0.99).outlier_score(
        np.zeros(1)) is None  # a model converted before the outlier score
