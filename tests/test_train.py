"""Training stage with TensorFlow: the model's contract, frozen BatchNorm, CLI, resume, mirrored."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hemalite.cli import main
from tests.helpers import NEEDS_TENSORFLOW, TINY_SIZE
from tests.helpers import cli_defaults_differing, real_images

keras = pytest.importorskip("keras", reason=NEEDS_TENSORFLOW)  # its imports need it too
from hemalite.train import model as models  # noqa: E402
from hemalite.train.data import TrainError  # noqa: E402

pytestmark = pytest.mark.tensorflow

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights" / \
    "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"


def test_model_takes_raw_pixels_and_scales_inside():
    model, backbone, head = models.build_mobilenet(3, 32, 0.35, "none")
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = head(backbone(x / 127.5 - 1.0))
    np.testing.assert_allclose(model(x), expected, atol=1e-5)
    assert model.input_shape == (None, 32, 32, 3)


def test_work_size_resizes_inside_the_model_and_its_export(tmp_path):
    from hemalite.convert.export import export_model

    model, backbone, head = models.build_mobilenet(3, 32, 0.35, "none", work_size=64)
    assert model.input_shape == (None, 32, 32, 3) and backbone.input_shape == (None, 64, 64, 3)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    grounded = model.get_layer("ground")(x)
    resized = keras.ops.image.resize(grounded, (64, 64), interpolation="bilinear")
    np.testing.assert_allclose(model(x), head(backbone(resized / 127.5 - 1.0)), atol=1e-5)
    features = backbone.output_shape[-1]
    exported = export_model(model, (np.eye(features, 4, dtype="float32"), np.zeros(4, "float32")))
    out = exported(x)
    np.testing.assert_allclose(out["probability"], model(x), atol=1e-5)
    assert out["cam"].shape == (2, 2 * 2 * 3)  # the 64-px backbone's 2 x 2 map, not 32 px's 1 x 1
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "m.keras")(x), model(x), atol=1e-6)


def test_fine_tune_from_block_2_freezes_only_the_stem_and_first_two_blocks():
    # make model's recipe (--fine-tune-from block_2_expand): the layers at the highest
    # resolution keep their ImageNet weights, everything from block 2 up trains, BatchNorm never.
    model, backbone, _ = models.build_mobilenet(4, 32, 0.35, "none")
    count = models.set_fine_tuning(backbone, "block_2_expand")
    trainable = {id(w) for w in model.trainable_weights}
    for name in ("Conv1", "expanded_conv_depthwise", "expanded_conv_project", "block_1_expand",
                 "block_1_depthwise", "block_1_project"):
        assert not any(id(w) in trainable for w in backbone.get_layer(name).weights), name
    for name in ("block_2_expand", "block_2_depthwise", "block_16_project", "Conv_1"):
        assert id(backbone.get_layer(name).weights[0]) in trainable, name
    bn = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert not any(id(w) in trainable for l in bn for w in l.weights)
    assert count == sum(l.trainable for l in backbone.layers)
    with pytest.raises(TrainError, match="--fine-tune-from: no layer named 'block_99'"):
        models.set_fine_tuning(backbone, "block_99")


def test_fine_tuning_keeps_batchnorm_statistics_and_trains_the_top():
    # The shared ImageNet weights when present: random weights saturate ReLU6 with frozen
    # BatchNorm, leaving no gradient to show that the top moves.
    weights, alpha = (str(WEIGHTS), 1.0) if WEIGHTS.is_file() else ("none", 0.35)
    model, backbone, _ = models.build_mobilenet(3, 64, alpha, weights)
    models.set_fine_tuning(backbone, "block_13_expand")
    bn = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    before = [np.array(l.moving_mean) for l in bn]
    top, bottom = backbone.get_layer("Conv_1"), backbone.get_layer("Conv1")
    trainable = {id(w) for w in model.trainable_weights}
    assert id(top.kernel) in trainable and id(bottom.kernel) not in trainable
    assert not any(id(w) in trainable for l in bn for w in l.weights)
    top_w, bottom_w = np.array(top.kernel), np.array(bottom.kernel)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).integers(0, 256, (8, 64, 64, 3)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    assert all(np.array_equal(b, np.array(l.moving_mean)) for b, l in zip(before, bn))
    assert np.array_equal(bottom_w, np.array(bottom.kernel))  # frozen bottom did not move
    if weights != "none":
        assert not np.allclose(top_w, np.array(top.kernel))  # unfrozen top moved


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="shared ImageNet weights absent")
def test_local_imagenet_weights_load_at_another_input_size():
    backbone = models.build_backbone(96, 1.0, str(WEIGHTS))
    kernel = np.array(backbone.get_layer("Conv1").kernel)
    assert kernel.shape == (3, 3, 3, 32) and np.abs(kernel).max() > 0.1


def test_train_options_default_to_the_config():
    from hemalite.train.cli import train_command
    from hemalite.train.fit import TrainConfig

    assert cli_defaults_differing(train_command, TrainConfig) == {}


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="weights file not found"):
        models.resolve_weights(str(tmp_path / "nope.weights.h5"))


def tiny_args(data, out, *extra):
    return ["train", str(data), "--out", str(out), "--weights", "none", "--alpha", "0.35",
            "--image-size", str(TINY_SIZE), "--batch-size", "8", "--no-progress", *extra]


@pytest.mark.slow
def test_train_cli_end_to_end_writes_every_artefact(tiny_data, tmp_path):
    result = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "run", "--epochs", "2"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for name in ("model.keras", "config.json", "history.json", "metrics.json",
                 "confusion_matrix.png", "labels.txt", "splits/train.csv", "splits/test.csv"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert set(metrics["per_class"]) == {"blue", "green", "red"}
    assert {"accuracy", "macro_f1", "auc_ovr_macro", "confusion_matrix", "ece"} <= set(metrics)
    assert np.sum(metrics["confusion_matrix"]) == metrics["n"]
    assert len(json.loads((run / "history.json").read_text())["train"]["loss"]) == 2
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert "test accuracy" in result.output
    assert not (run / "checkpoints").exists()


class InterruptInEpoch3(keras.callbacks.Callback):
    """A kill in the middle of epoch 3: two epochs backed up, one half done."""

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 2 and batch == 1:
            raise KeyboardInterrupt

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


@pytest.mark.slow
def test_resume_after_interruption_ends_where_an_uninterrupted_run_would(tiny_data, tmp_path):
    from hemalite.train.fit import TrainConfig, train

    cfg = TrainConfig(data_dir=str(tiny_data), out=str(tmp_path / "run"), weights="none",
                      alpha=0.35, image_size=TINY_SIZE, epochs=4, batch_size=8, patience=10,
                      augment=False, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, extra_callbacks=[InterruptInEpoch3()])
    assert not (tmp_path / "run" / "model.keras").exists()  # no half-written model
    train(cfg)
    history = json.loads((tmp_path / "run" / "history.json").read_text())["train"]
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0]  # two before the kill, two after


@pytest.mark.slow
def test_ema_saves_the_moving_average_of_the_best_epoch(tiny_data, tmp_path):
    from hemalite.train.fit import TrainConfig, train

    momentum = 0.5  # far from 1, so the average and the last weights clearly differ
    backup = tmp_path / "run" / "checkpoints" / "backup" / "latest.weights.h5"

    class Record(keras.callbacks.Callback):  # runs after every hemalite callback
        def __init__(self):
            super().__init__()
            self.steps, self.epochs, self.backed_up = [], [], []

        def on_train_batch_end(self, batch, logs=None):  # the raw weights after every step
            self.steps.append([np.array(w) for w in self.model.trainable_weights])

        def on_epoch_end(self, epoch, logs=None):  # what a resume would start from
            self.epochs.append(len(self.steps))
            clone = keras.models.clone_model(self.model)
            clone.load_weights(backup)
            self.backed_up.append([np.array(w) for w in clone.trainable_weights])

    # patience 1: this run stops early, so Keras's finalize writes the last raw weights and
    # EarlyStopping's restore of the best epoch (an earlier one) must come after it.
    cfg = TrainConfig(data_dir=str(tiny_data), out=str(tmp_path / "run"), weights="none",
                      alpha=0.35, image_size=TINY_SIZE, epochs=8, batch_size=8, patience=1,
                      learning_rate=1e-2, augment=False, progress=False, ema=momentum)
    record = Record()
    train(cfg, extra_callbacks=[record])
    # Keras's average: the first step's weights, then m * average + (1 - m) * weights.
    average, per_epoch = None, []
    for i, step in enumerate(record.steps, 1):
        average = step if average is None else [momentum * a + (1 - momentum) * w
                                                for a, w in zip(average, step)]
        if i in record.epochs:
            per_epoch.append((average, step))
    val_loss = json.loads((tmp_path / "run" / "history.json").read_text())["train"]["val_loss"]
    assert len(val_loss) < cfg.epochs  # stopped early
    expected, raw = per_epoch[int(np.argmin(val_loss))]
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras").trainable_weights
    assert len(saved) == len(expected)
    for s, e in zip(saved, expected):
        np.testing.assert_allclose(np.array(s), e, rtol=1e-4, atol=1e-5)
    assert max(np.abs(np.array(s) - r).max() for s, r in zip(saved, raw)) > 1e-4  # 10 x atol
    for (_, raw), backed_up in zip(per_epoch, record.backed_up):  # the backup: raw weights
        for b, r in zip(backed_up, raw):
            np.testing.assert_allclose(b, r, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cosine_schedule_decays_the_rate_every_step_to_one_percent(tiny_data, tmp_path):
    from hemalite.train.fit import TrainConfig, train

    class Record(keras.callbacks.Callback):  # the rate each step trains with
        def __init__(self):
            super().__init__()
            self.rates = []

        def on_train_batch_begin(self, batch, logs=None):
            rate = self.model.optimizer.learning_rate
            self.rates.append(float(keras.ops.convert_to_numpy(rate)))

    cfg = TrainConfig(data_dir=str(tiny_data), out=str(tmp_path / "run"), weights="none",
                      alpha=0.35, image_size=TINY_SIZE, epochs=3, batch_size=8, patience=10,
                      learning_rate=1e-2, augment=False, progress=False, lr_schedule="cosine")
    record = Record()
    train(cfg, extra_callbacks=[record])
    rates, n = record.rates, len(record.rates)  # every step of the three epochs
    assert n >= 6 and rates[0] == pytest.approx(1e-2)
    assert all(a > b for a, b in zip(rates, rates[1:]))  # every step, not every plateau
    # decay_steps = all the steps of the run: the last step is one step short of 1 %
    cosine = 0.5 * (1 + np.cos(np.pi * (n - 1) / n))
    assert rates[-1] == pytest.approx(1e-2 * (0.01 + 0.99 * cosine))
    logged = json.loads((tmp_path / "run" / "history.json").read_text())["train"]
    assert len(logged["learning_rate"]) == 3 and logged["learning_rate"][-1] < rates[-1]

    again = dataclasses.replace(cfg, out=str(tmp_path / "again"))
    with pytest.raises(KeyboardInterrupt):
        train(again, extra_callbacks=[InterruptInEpoch3()])
    resumed = Record()
    train(again, extra_callbacks=[resumed])  # from the backup at the end of epoch 2
    assert len(resumed.rates) == n // 3
    np.testing.assert_allclose(resumed.rates, rates[-(n // 3):], rtol=1e-5)  # not from 1e-2


def test_stain_jitter_reaches_the_training_images(monkeypatch):
    from PIL import Image

    from hemalite import shifts
    from hemalite.train.fit import image_dataset

    monkeypatch.setattr(shifts, "JITTER_P", 0.0)  # nothing else drawn: only the stain moves
    monkeypatch.setattr(shifts, "MAGNIFY_P", 0.0)
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64)))
                  for p in real_images(1)])

    def first_batch(stain_p):
        ds = image_dataset(x, np.arange(len(x)), len(x), False, None, 0, acquisition=True,
                           stain_p=stain_p)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first_batch(0.0), x)
    assert not any(np.array_equal(a, b) for a, b in zip(first_batch(1.0), x))


def test_stain_jitter_option_reaches_the_training_dataset(tiny_data, tmp_path, monkeypatch):
    from hemalite.train import datasets

    seen = []
    real = datasets.image_dataset
    monkeypatch.setattr(datasets, "image_dataset",
                        lambda *a, **k: seen.append(k) or real(*a, **k))
    result = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "run", "--epochs", "1",
                                                "--stain-jitter", "0.4"))
    assert result.exit_code == 0, result.output
    training = [k for k in seen if "stain_p" in k]  # validation's dataset is never jittered
    assert training and all(k["stain_p"] == 0.4 for k in training)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["stain_jitter"] == 0.4


def test_consistency_loss_adds_the_jensen_shannon_of_each_pair_and_only_for_pairs():
    from scipy.spatial.distance import jensenshannon

    from hemalite.train.fit import consistency_loss

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25], [0.5, 0.25, 0.25],
                  [0.2, 0.2, 0.6]], np.float32)
    labels = np.array([0, 0, 1, 1, 2])
    cross_entropy = -np.log(p[np.arange(5), labels])
    loss = consistency_loss(3, weight=4.0)
    plain = np.asarray(loss(labels, p))  # validation: no pairs marked
    np.testing.assert_allclose(plain, cross_entropy, rtol=1e-5)
    paired = np.asarray(loss(labels + 3, p))  # rows 0-1 and 2-3 are pairs; 4 has no partner
    js = jensenshannon(p[0], p[1]) ** 2  # scipy gives the distance: its square root
    np.testing.assert_allclose(paired, cross_entropy + 4.0 * np.array([js, js, 0, 0, 0]),
                               rtol=1e-4)
    assert js > 0.1  # the first pair disagrees, the second agrees


def test_consistency_pairs_are_two_jitters_of_one_image_side_by_side(monkeypatch):
    from PIL import Image

    from hemalite import shifts
    from hemalite.train.fit import image_dataset

    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64)))
                  for p in real_images(1)])  # one image per class
    weights = {0: 2.0, 1: 0.5, 2: 1.0, 3: 1.5}

    def first_batch():
        ds = image_dataset(x, np.arange(4), 8, True, None, 0, acquisition=True,
                           pairs=(4, weights))
        return [a.numpy() for a in next(iter(ds))]

    monkeypatch.setattr(shifts, "JITTER_P", 0.0)  # no jitter: a pair is one image twice
    monkeypatch.setattr(shifts, "MAGNIFY_P", 0.0)
    images, labels, sample_weights = first_batch()
    assert labels[::2].tolist() == labels[1::2].tolist()  # side by side
    assert sorted(labels[::2] - 4) == [0, 1, 2, 3]  # every image, marked paired
    for i, label in enumerate(labels - 4):
        np.testing.assert_array_equal(images[i], x[label])
        assert sample_weights[i] == weights[label]
    monkeypatch.setattr(shifts, "MAGNIFY_P", 1.0)  # each copy through its own objective
    images, labels, _ = first_batch()
    assert not any(np.array_equal(images[2 * i], images[2 * i + 1]) for i in range(4))


@pytest.mark.slow
def test_consistency_trains_through_the_cli_and_saves_a_plain_model(tiny_data, tmp_path,
                                                                    monkeypatch):
    from hemalite.train import datasets, phases

    seen = {"datasets": [], "losses": []}
    real_dataset, real_loss = datasets.image_dataset, phases.consistency_loss
    monkeypatch.setattr(datasets, "image_dataset",
                        lambda *a, **k: seen["datasets"].append(k) or real_dataset(*a, **k))
    monkeypatch.setattr(phases, "consistency_loss",
                        lambda *a: seen["losses"].append(a) or real_loss(*a))
    result = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "run", "--epochs", "2",
                                                "--consistency", "10"))
    assert result.exit_code == 0, result.output
    training = [k for k in seen["datasets"] if "pairs" in k]  # validation's has no pairs
    assert len(training) == 1 and training[0]["pairs"][0] == 3  # the tiny data's 3 classes
    assert seen["losses"] == [(3, 10.0)]
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["consistency"] == 10.0
    history = json.loads((run / "history.json").read_text())["train"]
    assert len(history["loss"]) == 2 and 0 <= history["accuracy"][-1] <= 1
    model = keras.saving.load_model(run / "model.keras")  # no custom objects needed
    assert model.loss == "sparse_categorical_crossentropy"


def test_distillation_loss_mixes_the_label_and_the_softened_teacher():
    from hemalite.train.phases import distillation_loss

    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    teacher = np.array([[0.1, 0.8, 0.1], [0.1, 0.3, 0.6]], np.float32)
    labels = np.array([0, 2])
    cross_entropy = -np.log(p[np.arange(2), labels])
    rows = np.concatenate([labels[:, None].astype(np.float32), teacher], axis=1)

    def soften(q, t=2.0):
        q = q ** (1 / t)
        return q / q.sum(-1, keepdims=True)
    kl = (soften(teacher) * np.log(soften(teacher) / soften(p))).sum(-1)
    assert kl[0] > 0.1 and kl[1] < 1e-6  # the first row disagrees with its teacher
    np.testing.assert_allclose(np.asarray(distillation_loss(0.25)(rows, p)),
                               0.75 * cross_entropy + 0.25 * 4.0 * kl, rtol=1e-4, atol=1e-6)
    # validation's plain labels: the cross-entropy alone, whatever the weight
    np.testing.assert_allclose(np.asarray(distillation_loss(0.25)(labels[:, None], p)),
                               cross_entropy, rtol=1e-5)


@pytest.mark.slow
def test_teacher_targets_reach_fine_tuning_and_a_plain_model_is_saved(tiny_data, tiny_run,
                                                                       tmp_path, monkeypatch):
    from hemalite.train import datasets, phases

    seen = []
    real_dataset = datasets.image_dataset
    monkeypatch.setattr(datasets, "image_dataset",
                        lambda *a, **k: seen.append(k.get("taught")) or real_dataset(*a, **k))
    teacher_run = tmp_path / "teacher"  # a copy: this test retrains it below
    shutil.copytree(tiny_run, teacher_run)
    args = tiny_args(tiny_data, tmp_path / "run", "--epochs", "2", "--teacher",
                     str(teacher_run), "--distill", "0.7")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / "teacher.json").read_text())
    assert recorded["sha256"] == phases.teacher_digest(teacher_run / "model.keras")
    weights, soft = next(t for t in seen if t is not None)  # validation's has none
    teacher = keras.saving.load_model(teacher_run / "model.keras")
    x, _, _ = phases_pixels(tiny_data, tmp_path / "run")
    np.testing.assert_allclose(soft, teacher.predict(x, verbose=0), atol=1e-5)
    assert np.allclose(soft.sum(1), 1) and len(weights) == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["teacher"] == str(teacher_run) and config["distill"] == 0.7
    # saved again unchanged (Keras records the save time), the teacher keeps its digest ...
    teacher.save(tmp_path / "resaved.keras")
    assert phases.teacher_digest(tmp_path / "resaved.keras") == recorded["sha256"]
    # ... retrained at its path while the student was interrupted, it is not resumed from
    teacher.layers[-1].set_weights([w + 0.1 for w in teacher.layers[-1].get_weights()])
    teacher.save(teacher_run / "model.keras")
    (tmp_path / "run" / "checkpoints").mkdir()
    changed = CliRunner().invoke(main, args)
    assert changed.exit_code == 2 and "has changed since" in changed.output, changed.output
    assert "Traceback" not in changed.output
    model = keras.saving.load_model(tmp_path / "run" / "model.keras")  # no custom objects
    assert model.loss == "sparse_categorical_crossentropy"
    missing = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "other", "--epochs", "1",
                                                 "--teacher", str(tmp_path / "nowhere")))
    assert missing.exit_code == 2 and "--teacher" in missing.output
    assert "Traceback" not in missing.output and not (tmp_path / "other").exists()
    (tmp_path / "broken").mkdir()  # a model.keras that is no Keras file: one line
    (tmp_path / "broken" / "model.keras").write_text("not a model")
    broken = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "other", "--epochs", "1",
                                                "--teacher", str(tmp_path / "broken")))
    assert broken.exit_code == 2 and "not a Keras model file" in broken.output, broken.output
    assert "Traceback" not in broken.output and not (tmp_path / "other").exists()
    # a teacher trained on another split may have learnt this run's held-out images
    other_split = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "other", "--epochs",
                                                     "1", "--seed", "7", "--teacher",
                                                     str(tiny_run)))
    assert other_split.exit_code == 2 and "trained on another split" in other_split.output
    assert not (tmp_path / "other").exists()  # refused before anything was written


def phases_pixels(data_dir, run):
    """The training split's pixels at the tiny size, in the run's manifest order."""
    from hemalite.contract import InputSpec
    from hemalite.train import data

    labels = data.read_labels(run / "labels.txt")
    samples = data.read_manifest(run / "splits" / "train.csv", labels)
    return data.load_pixels(data_dir, samples, InputSpec(TINY_SIZE, TINY_SIZE), False)


def test_train_seed_moves_the_weights_and_not_the_split(tiny_data, tmp_path):
    from hemalite.train.fit import TrainConfig, prepare_splits, train

    # epochs=0: the saved model is the initialisation, a pure function of the seed
    base = dict(data_dir=str(tiny_data), weights="none", alpha=0.35, image_size=TINY_SIZE,
                epochs=0, batch_size=8, progress=False)
    runs = {"default": {}, "same": {"train_seed": 42}, "other": {"train_seed": 7}}
    weights = {}
    for name, extra in runs.items():
        train(TrainConfig(out=str(tmp_path / name), **base, **extra))
        model = keras.saving.load_model(tmp_path / name / "model.keras")
        weights[name] = model.get_weights()
        for split in ("train", "val", "test"):
            assert (tmp_path / name / "splits" / f"{split}.csv").read_text() == \
                (tmp_path / "default" / "splits" / f"{split}.csv").read_text()
    assert all(np.array_equal(a, b) for a, b in zip(weights["default"], weights["same"]))
    assert not all(np.array_equal(a, b) for a, b in zip(weights["default"], weights["other"]))
    # --seed itself still moves the split
    assert prepare_splits(TrainConfig(out="unused", seed=7, **base))[0] != \
        prepare_splits(TrainConfig(out="unused", **base))[0]


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus(tiny_data, tmp_path):
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from hemalite.train.fit import TrainConfig, make_strategy, train
assert make_strategy("mirrored").num_replicas_in_sync == 2
result = train(TrainConfig(data_dir={str(tiny_data)!r}, out={str(tmp_path / 'run')!r},
    weights="none", alpha=0.35, image_size={TINY_SIZE}, epochs=1, batch_size=8,
    distribute="mirrored", augment=False, progress=False))
print("replicas ok", result["test"]["n"])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas ok" in proc.stdout


@pytest.mark.slow
def test_baseline_cnn_trains_through_the_cli(tiny_data, tmp_path):
    args = ["train", str(tiny_data), "--out", str(tmp_path / "cnn"), "--arch", "cnn",
            "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cnn" / "model.keras").is_file()


@pytest.mark.parametrize("setup, message", [
    ("missing", "dataset folder not found"), ("single", "single class"),
    ("hollow", "has no images"), ("few", "class 'red' has 3 distinct images: too few to split"
                                         " into train and validation (at least 5")])
def test_train_cli_bad_input_is_one_line_not_a_traceback(tmp_path, setup, message):
    from tests.helpers import make_dataset

    data = tmp_path / "data"
    if setup == "single":
        make_dataset(data, per_class=2, colours={"red": (200, 0, 0)})
    elif setup == "hollow":
        make_dataset(data, per_class=2)
        (data / "nothing").mkdir()
    elif setup == "few":
        make_dataset(data, per_class=12)
        for extra in sorted((data / "red").iterdir())[3:]:
            extra.unlink()
    result = CliRunner().invoke(main, tiny_args(data, tmp_path / "run", "--epochs", "1"))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # a refused run leaves nothing behind


@pytest.mark.parametrize("options, message", [
    (("--arch", "cnn", "--work-size", "64"), "--work-size resizes the input of MobileNetV2's"),
    (("--no-acquisition", "--stain-jitter", "0.3"), "--stain-jitter is part of the acquisition"),
    (("--consistency", "10", "--batch-size", "7"), "--batch-size must be even, not 7"),
    (("--consistency", "1", "--teacher", "runs/x"), "--teacher and --consistency both")])
def test_options_that_contradict_each_other_are_one_line(tiny_data, tmp_path, options, message):
    result = CliRunner().invoke(main, tiny_args(tiny_data, tmp_path / "run", *options))
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="shared ImageNet weights absent")
def test_a_misspelt_fine_tune_layer_is_one_line_before_any_training(tiny_data, tmp_path):
    args = tiny_args(tiny_data, tmp_path / "run", "--fine-tune-from", "block_2_expnd")
    args[args.index("--weights") + 1], args[args.index("--alpha") + 1] = str(WEIGHTS), "1.0"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--fine-tune-from: no layer named 'block_2_expnd'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()  # refused before the head phase wrote anything


def tiny_run_args(run: Path, *changed):
    """The options the tiny_run fixture was trained with, as a command line."""
    config = json.loads((run / "config.json").read_text())
    return ["train", config["data_dir"], "--out", str(run), "--weights", "none", "--alpha",
            "0.35", "--image-size", str(TINY_SIZE), "--epochs", "12", "--batch-size", "8",
            "--learning-rate", "0.01", "--patience", "12", "--no-augment", "--no-ground",
            "--no-acquisition", "--no-progress", *changed]


def test_a_run_dir_is_not_reused_with_other_options_and_force_clears_it(tiny_run, tiny_tflite,
                                                                        tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "notes.txt").write_text("mine")
    stale = run / "tflite" / "model_int8.tflite"
    assert stale.is_file()
    other = CliRunner().invoke(main, tiny_run_args(run, "--image-size", "48"))
    assert other.exit_code == 2, other.output
    assert "holds a run trained with other options (--image-size 32 -> 48)" in other.output
    assert stale.is_file()  # refused: nothing touched
    again = CliRunner().invoke(main, tiny_run_args(run))
    assert again.exit_code == 0, again.output
    assert "already complete" in again.output and "--force to retrain" in again.output
    from hemalite.train.fit import RUN_ARTEFACTS, TrainConfig, prepare_run_dir

    config = json.loads((run / "config.json").read_text())
    assert prepare_run_dir(TrainConfig(data_dir=config["data_dir"], out=str(run),
                                       image_size=48, force=True)) is False
    assert not any((run / name).exists() for name in RUN_ARTEFACTS)
    assert (run / "notes.txt").read_text() == "mine"  # not a run artefact: kept


def test_imagenet_weights_without_network_is_one_line(tmp_path):
    from tests.helpers import make_dataset

    data = make_dataset(tmp_path / "data", per_class=12)
    closed = "http://127.0.0.1:9"  # nothing listens on the discard port: no network
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "https_proxy": closed,
           "HTTPS_PROXY": closed, "http_proxy": closed, "HTTP_PROXY": closed, "no_proxy": ""}
    code = "import sys; from hemalite.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "train", str(data), "--out",
                           str(tmp_path / "run"), "--image-size", "96", "--epochs", "1",
                           "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: cannot download the ImageNet weights (no network?): pass "
                      "--weights PATH (a local .weights.h5) or --weights none"]
    assert not (tmp_path / "run").exists()
    assert "oneDNN" not in proc.stderr and "absl::InitializeLog" not in proc.stderr


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="shared ImageNet weights absent")
def test_weights_of_another_width_are_one_line():
    with pytest.raises(TrainError, match="does not match --alpha 0.35") as err:
        models.build_backbone(96, 0.35, str(WEIGHTS))
    assert len(str(err.value)) < 200
