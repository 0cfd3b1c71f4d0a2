"""`edge-calibrate`: a site's own labelled images adapt the model and validate it. Bad site
folders on the committed tiny model; the real thing on real smears with the bundled model."""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hemalite import shifts
from hemalite.contract import preprocess
from hemalite.edge import calibrate
from hemalite.edge.cli import calibrate_command, classify_command
from hemalite.edge.runtime import default_model_path, load_model
from tests.helpers import REPO, SHARED_DATA, TINY_INT8, make_dataset


@pytest.fixture
def site(tmp_path):
    """A tiny site: the tiny model's three colour classes, 12 images each."""
    return make_dataset(tmp_path / "site", per_class=12, size=32, seed=3)


def run(*args):
    return CliRunner().invoke(calibrate_command, [*map(str, args)])


def write_site(folder, shift, start: int, count: int, subfolder: str = "") -> None:
    """Real smears of the bundled model's test split, `count` per class from the `start`th,
    through `shift` (rgb -> rgb), as PNG in folder/<label>/[subfolder/] (skips without data)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    with open(REPO / "hemalite" / "models" / "test_split.csv", newline="") as fh:
        rows = [(r["path"], r["label"]) for r in csv.DictReader(fh)]
    for label in ("Benign", "Early", "Pre", "Pro"):
        target = folder / label / subfolder
        target.mkdir(parents=True)
        for p in [p for p, lab in rows if lab == label][start:(start + count) or None]:
            rgb = np.asarray(Image.open(SHARED_DATA / p).convert("RGB"))
            Image.fromarray(shift(rgb)).save(target / (p.split("/")[-1] + ".png"))


def test_every_problem_of_a_site_folder_is_one_line_and_nothing_is_written(site, tmp_path):
    (site / "purple").mkdir()  # not a label
    Image.new("RGB", (32, 32)).save(site / "purple" / "x.png")
    for extra in sorted((site / "green").iterdir())[3:]:  # green keeps 3 images
        extra.unlink()
    (site / "red" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "site.tflite"
    result = run(site, "--out", out, "--model", TINY_INT8)
    assert result.exit_code == 2  # a user error: hemalite.errors.HemaliteError's code
    lines = result.output.splitlines()
    assert any("purple" in line and "blue, green, red" in line for line in lines)
    assert any("green" in line and "3 readable images, at least 10" in line for line in lines)
    assert any("broken.png" in line and "decode" in line for line in lines)
    assert "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob("site.*"))


def test_a_class_without_images_is_said_and_keeps_the_model_unvalidated(site, tmp_path):
    shutil.rmtree(site / "red")
    out = tmp_path / "site.tflite"
    result = run(site, "--out", out, "--model", TINY_INT8, "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "no images of red" in result.output
    cal = load_model(out).info.extra["site_calibration"]
    assert cal["missing_classes"] == ["red"] and not cal["validated"]
    assert "Not adapted nor validated: red" in (tmp_path / "site.calibration.md").read_text()
    assert "NOT VALIDATED: the 95 % lower bound" in result.output
    # and every later run says which class the site never checked
    assert "no site images of red" in calibrate.status_line(load_model(out).info)


def test_cross_validation_never_scores_a_fold_with_an_adaptation_that_saw_it(site, tmp_path,
                                                                          monkeypatch):
    fitted_on, scored = [], []
    real_adapt, real_decide = calibrate.adapt, calibrate.decide

    def adapt(base, head, by_zoom, s, index, cfg):
        fitted_on.append(set(index.tolist()))
        return real_adapt(base, head, by_zoom, s, index, cfg)

    def decide(model, rgb):
        scored.append((len(fitted_on), next(i for i, r in enumerate(sites[0].rgb)
                                            if r is rgb)))
        return real_decide(model, rgb)

    sites = []
    real_read = calibrate.read_site
    monkeypatch.setattr(calibrate, "adapt", adapt)
    monkeypatch.setattr(calibrate, "decide", decide)
    monkeypatch.setattr(calibrate, "read_site",
                        lambda *a: sites.append(real_read(*a)) or sites[0])
    calibrate.calibrate(calibrate.CalibrateConfig(str(site), str(tmp_path / "m.tflite"),
                                                  folds=4), str(TINY_INT8))
    folds = fitted_on[:-1]  # the last fit is the final model, on every image
    assert len(folds) == 4 and fitted_on[-1] == set(range(36))
    cv_scores = [(fold, i) for fold, i in scored if 1 <= fold <= 4]
    assert sorted(i for _, i in cv_scores) == list(range(36))  # every image once
    for fold, i in cv_scores:
        assert i not in folds[fold - 1]  # scored by a model that never saw it


@pytest.mark.slow
def test_a_shifted_real_site_improves_and_the_file_stands_alone(tmp_path):
    """Real smears through another objective (x0.7): 10 per class calibrate the bundled
    model; 10 others per class, classified by edge-classify with --model only, are more
    often right after (a REFER counts as not right)."""
    for part, offset in (("site", 0), ("rest", 10)):
        write_site(tmp_path / part, lambda rgb: shifts.magnification(rgb, 0.7), offset, 10)
    out = tmp_path / "site.tflite"
    result = run(tmp_path / "site", "--out", out, "--name", "objective x0.7")
    assert result.exit_code == 0, result.output

    def right(model_args):
        res = CliRunner().invoke(classify_command, [*model_args, str(tmp_path / "rest"),
                                                    "--jsonl", str(tmp_path / "r.jsonl")])
        assert res.exit_code == 0, res.output
        rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
        return np.mean([r["label"] == r["truth"] for r in rows]), res.output

    before, _ = right([])
    after, output = right(["--model", str(out)])
    assert after > before
    assert "site calibration 'objective x0.7'" in output
    model = load_model(out)
    cal = model.info.extra["site_calibration"]
    assert cal["images_per_class"] == {"Benign": 10, "Early": 10, "Pre": 10, "Pro": 10}
    assert set(calibrate.DEFAULT_INGREDIENTS) == set(cal["adapted"])
    assert model.info.spec.zoom > 1.1  # the objective undone: cells enlarged again
    assert model.domain.min_confidence == calibrate.SITE_FLOOR  # a calibrated site's floor
    assert model.info.outputs[0] == "probability"  # what MediaPipe reads first
    with_head = tmp_path / "head.tflite"  # the head refit (an option) lives in the graph
    result = run(tmp_path / "site", "--out", with_head, "--adapt", "head", "--folds", "2")
    assert result.exit_code == 0, result.output
    from hemalite.edge.head import read_head
    assert not np.allclose(read_head(with_head.read_bytes()).weights,
                           read_head(out.read_bytes()).weights)
    assert load_model(default_model_path()).info.spec.zoom == 1.0


@pytest.mark.slow
def test_a_bright_lamp_is_not_read_as_another_objective(tmp_path):
    """Real smears under a lamp x1.2 (12 per class): the red cells pale into the background
    and both size cues shrink, so the scale reads about x0.6 of training's. The zoom is read
    only on images whose exposure is in range: none here, so it stays 1 (it read 1.44 and lost
    8 points before). The model goes to a folder that does not exist yet."""
    write_site(tmp_path / "site", lambda rgb: shifts.brightness(rgb, 1.2), 0, 12)
    out = tmp_path / "new" / "folder" / "lamp.tflite"
    result = run(tmp_path / "site", "--out", out, "--folds", "3")
    assert result.exit_code == 0, result.output
    assert load_model(out).info.spec.zoom == 1.0
    report = json.loads(out.with_suffix(".calibration.json").read_text())
    assert [f["zoom"] for f in report["folds_read"]] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_another_stain_colour_is_turned_back(tmp_path):
    """Real smears whose stain is turned by -15 degrees (another batch, another white
    balance; 12 per class): edge-calibrate reads the leukocytes' hue against training's and
    writes the colour step that turns it back into the model's input spec (which
    edge-classify's preprocessing applies: tests/test_contract.py); the objective is
    untouched."""
    # a lab's own layout: each class's images in a nested folder whose name has a space
    write_site(tmp_path / "site", lambda rgb: shifts.hue(rgb, -15), -12, 12, "slide 1")
    out = tmp_path / "stain.tflite"
    result = run(tmp_path / "site", "--out", out, "--folds", "3")
    assert result.exit_code == 0, result.output
    spec = load_model(out).info.spec
    assert 9 <= spec.hue <= 21 and spec.zoom == 1.0
    assert abs(np.log(spec.saturation)) < 0.2
    assert f"colour: hue {spec.hue:+g} degrees" in out.with_suffix(".calibration.md").read_text()
    # the probes (edge-classify's second look with the hue turned back, or at training's
    # size) are the base model's: at a calibrated site the colour step and the zoom have
    # done that, so they never ask
    from hemalite import acquisition
    from hemalite.edge.assess import stain_turn, zoom_probe

    site, base = load_model(out), load_model(default_model_path())
    pixels = preprocess(np.asarray(Image.open(next((tmp_path / "site").rglob("*.png")))
                                   .convert("RGB")), spec)
    far = {**acquisition.measure(pixels), "hue": (base.domain.acquisition["medians"]["hue"]
                                                  + 40) % 360}
    calls = []
    site.predict = lambda x: calls.append(x) or np.eye(4)[0]
    assert stain_turn(site, pixels, np.eye(4)[1], far) is None and calls == []
    base.predict = lambda x: calls.append(x) or np.eye(4)[0]
    assert stain_turn(base, pixels, np.eye(4)[1], far) is not None and len(calls) == 1
    med = base.domain.acquisition["medians"]
    small = {**far, "hue": med["hue"], "red_cell_radius": med["red_cell_radius"] * 0.6,
             "leukocyte_size": med["leukocyte_size"] * 0.6}
    assert zoom_probe(site, pixels, np.eye(4)[1], small) is None and len(calls) == 1
    assert zoom_probe(base, pixels, np.eye(4)[1], small) is not None and len(calls) == 2


@pytest.mark.slow
def test_a_pale_stain_is_read_through_its_own_correction(tmp_path):
    """Real smears at saturation x0.4 (12 per class): one reading of the leukocytes'
    saturation falls short of the inverse, x2.5 (a validation site read x1.69); reading
    again through the correction until it settles brings the gain within 20 % of it.
    (Whether the step is then kept depends on the base model: the bundled one is as often
    right without it, so this reads the step itself.)"""
    from hemalite import acquisition

    write_site(tmp_path / "site", lambda rgb: shifts.saturation(rgb, 0.4), -12, 12)
    base = load_model(default_model_path())
    site = calibrate.read_site(str(tmp_path / "site"), base.info.labels, 10)
    views = calibrate.Views(base, site)
    check = acquisition.from_dict(base.domain.acquisition)
    step = calibrate.read_colour(views, check, np.arange(len(site.y)), 1.0)
    assert 2.0 <= step.saturation <= 3.0 and step.hue == 0.0, step
    readings = sorted(s.saturation for s in views.cache if s.saturation != 1.0)
    assert len(readings) >= 2 and readings[0] < 2.0  # the first correction fell short


def test_the_widened_domain_check_accepts_a_sites_ordinary_images_at_its_stated_rate():
    """40 images of a site whose features spread wider than training's: the widened
    threshold accepts the site's fresh images at about the check's acceptance (99.5 %).
    The empirical 99.5th percentile of 40 scores alone is about their 97.5th (measured over
    200 seeds: a median of 97.9 % accepted, 91 % at the 5th percentile)."""
    from hemalite import domain as dom

    accepted = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        check = dom.DomainCheck(means=[[0.0] * 8], threshold=1.0, acceptance=0.995)
        widened = calibrate.widen_domain(check, rng.normal(0, 1.6, (40, 8)))
        fresh = dom.feature_score(rng.normal(0, 1.6, (4000, 8)), np.asarray(check.means))
        accepted.append((fresh <= widened.threshold).mean())
        assert widened.threshold >= check.threshold  # never lowered
    assert np.median(accepted) > 0.99 and min(accepted) > 0.97


@pytest.mark.slow
def test_a_lamp_the_model_does_not_survive_is_referred_with_its_fix_not_adapted_to(tmp_path):
    """Real smears under a lamp x1.5 (12 per class): the base model's best guess fails on
    many of them, so calibration keeps training's exposure and focus ranges: the site's
    images are referred for exposure with the fix, and the report and the command say
    why. (x1.5: the distilled bundled model survives x1.4 on some cross-validation folds of
    these images; adapting the 288-px model to x1.4 accepted 78 % right on validation.)"""
    write_site(tmp_path / "site", lambda rgb: shifts.brightness(rgb, 1.5), 12, 12)
    out = tmp_path / "lamp.tflite"
    result = run(tmp_path / "site", "--out", out, "--folds", "3")
    assert result.exit_code == 0, result.output
    cal = load_model(out).info.extra["site_calibration"]
    assert cal["best_guess"] < calibrate.SITE_SURVIVAL
    assert cal["kept_at_training"] == list(calibrate.FIXED_AT_THE_MICROSCOPE)
    assert "the lamp and focus keep training's ranges" in result.output
    assert "keep training's ranges" in out.with_suffix(".calibration.md").read_text()
    report = json.loads(out.with_suffix(".calibration.json").read_text())
    refer = report["after"]["confusion"]
    assert sum(row[-1] for row in refer) > 0.8 * 48  # most referred (exposure), not guessed


def test_a_sites_second_mode_is_accepted_with_its_first():
    """A site whose stain hue has two modes, as a lamp makes of all4's magenta Pro slides:
    30 images within 6 degrees, 10 at 24 degrees from them (their circular mean, the site's
    centre, is about +9). A robust sd sees only the first mode; the site's own images must
    still pass (the range reaches their 99.5 % normal range), so an image 22 degrees above
    the centre, like the second mode's, is accepted; one at +50 is still referred for stain."""
    from hemalite import acquisition

    fitted = load_model(default_model_path()).domain.acquisition
    med = fitted["medians"]
    site = ([{**med, "hue": (med["hue"] + 0.2 * i) % 360} for i in range(30)]
            + [{**med, "hue": (med["hue"] + 24 + 0.2 * i) % 360} for i in range(10)])
    check = acquisition.from_dict(calibrate.recentre_acquisition(fitted, site))
    centre = check.medians["hue"]
    assert check.faults({**med, "hue": (centre + 22) % 360}) == []
    assert [reason for _, reason, _ in check.faults({**med, "hue": (centre + 50) % 360})] == [
        acquisition.STAIN]


def test_the_survival_rule_needs_the_labels_to_show_the_model_failing():
    """40 images right on 35 (87.5 %) do not show a model under 90 % (a site where it is right
    on 95 % draws that often enough): the lamp and focus are adapted. Right on 28 (70 %, as
    under lamp x1.4) they do: training's ranges are kept."""
    assert calibrate.survives(35, 40) and calibrate.survives(40, 40)
    assert not calibrate.survives(28, 40) and not calibrate.survives(31, 40)


def test_the_lamp_and_focus_kept_at_training_are_not_moved_the_rest_is():
    """recentre_acquisition with `kept`: a site whose lamp is x1.5 brighter and whose hue is
    turned keeps training's brightness range when brightness is kept, and moves it when not;
    the hue moves either way."""
    model = load_model(default_model_path())
    fitted = model.domain.acquisition
    med = fitted["medians"]
    site = [{**med, "brightness": med["brightness"] * 1.5 * (1 + 0.01 * i),
             "hue": (med["hue"] + 25 + 0.1 * i) % 360} for i in range(20)]
    kept = calibrate.recentre_acquisition(fitted, site, calibrate.FIXED_AT_THE_MICROSCOPE)
    moved = calibrate.recentre_acquisition(fitted, site)
    assert kept["ranges"]["brightness"] == fitted["ranges"]["brightness"]
    assert kept["medians"]["brightness"] == med["brightness"]
    assert moved["medians"]["brightness"] > 1.4 * med["brightness"]
    for out in (kept, moved):
        assert abs((out["medians"]["hue"] - med["hue"]) % 360 - 26) < 2
    # a REFER's detail names whose median it is read against: the site's when it moved
    from hemalite import acquisition

    dim = {**med, "brightness": med["brightness"] * 0.3}
    assert "of training's median" in acquisition.from_dict(kept).faults(dim)[0][2]
    assert "of the site's median" in acquisition.from_dict(moved).faults(dim)[0][2]
    assert "brightness" not in kept["site"] and "hue" in kept["site"]
    assert "site" not in fitted  # a convert-made model's check: as before


def test_a_recentred_range_still_accepts_what_training_accepted():
    """recentre_acquisition: a site whose 20 images read the stain hue 6 degrees off
    training's median, tightly, is centred on its own median; an image at training's median
    -20 degrees (inside training's range, outside a range of training's width recentred on
    the site) is still accepted, one at -40 is still referred for stain; and the same for
    the magnification, whose range is read through the two size cues."""
    from hemalite import acquisition

    fitted = load_model(default_model_path()).domain.acquisition
    med = fitted["medians"]
    low, high = fitted["ranges"]["hue"]
    assert -40 < low < -20 < high  # the two images fall where the docstring says
    site = [{**med, "hue": (med["hue"] + 6 + 0.1 * i) % 360} for i in range(20)]
    check = acquisition.from_dict(calibrate.recentre_acquisition(fitted, site))
    assert abs((check.medians["hue"] - med["hue"]) % 360 - 7) < 1
    inside = {**med, "hue": (med["hue"] - 20) % 360}
    outside = {**med, "hue": (med["hue"] - 40) % 360}
    assert check.faults(inside) == []
    assert [reason for _, reason, _ in check.faults(outside)] == [acquisition.STAIN]
    # the magnification likewise: a site whose cells read 8 % larger (within the zoom's
    # tolerance) still accepts cells 2 % inside training's smallest
    site = [{**med, "red_cell_radius": med["red_cell_radius"] * 1.08 * (1 + 0.001 * i),
             "leukocyte_size": med["leukocyte_size"] * 1.08} for i in range(20)]
    check = acquisition.from_dict(calibrate.recentre_acquisition(fitted, site))
    small = np.exp(fitted["ranges"]["scale"][0]) * 1.02
    image = {**med, "red_cell_radius": med["red_cell_radius"] * small,
             "leukocyte_size": med["leukocyte_size"] * small}
    assert acquisition.from_dict(fitted).faults(image) == []
    assert check.faults(image) == []


def test_the_report_says_when_folds_and_the_written_model_differ_on_the_survival_rule():
    """kept_lines: the final model kept training's lamp and focus but some folds did not (or
    the other way round): calibration.md says the cross-validation measured other models."""
    kept = {"kept_at_training": list(calibrate.FIXED_AT_THE_MICROSCOPE), "best_guess": 0.85}
    fold = {"kept_at_training": []}
    assert len(calibrate.kept_lines(kept, [fold, {**fold, **kept}])) == 2
    assert "1 of 2 cross-validation folds" in calibrate.kept_lines(kept, [fold, {**kept}])[1]
    assert calibrate.kept_lines({"kept_at_training": []}, [fold, fold]) == []
    assert "0 of 1" in calibrate.kept_lines(kept, [fold])[-1]


def test_a_calibrated_model_is_not_calibrated_again(site, tmp_path):
    """Calibrating a calibrated model would stack one site's zoom, colour and checks on
    another's: one line, nothing written."""
    first = tmp_path / "first.tflite"
    assert run(site, "--out", first, "--model", TINY_INT8, "--folds", "2").exit_code == 0
    second = tmp_path / "second.tflite"
    result = run(site, "--out", second, "--model", first)
    assert result.exit_code != 0 and "already calibrated" in result.output
    assert not second.exists()


def test_the_progress_bar_grows_with_the_steps_it_did_not_expect():
    from tqdm import tqdm

    with open(os.devnull, "w") as devnull:
        bar = tqdm(total=2, disable=False, file=devnull)
        for _ in range(3):
            calibrate.tick(bar)
        assert (bar.n, bar.total) == (3, 3)  # never 3 of 2
    calibrate.tick(None)  # without a bar: nothing
