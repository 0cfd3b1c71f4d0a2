"""One call per case (hemalite.cases): the rule on arrays, on real pseudo-cases through the
bundled model, and `edge-classify --cases` end to end on real smear images."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hemalite import cases
from hemalite.edge.cli import classify_command
from tests.helpers import REPO, SHARED_DATA, TINY_INT8

LABELS = ("Benign", "Early", "Pre", "Pro")


def fields(*rows) -> np.ndarray:
    return np.array(rows, float)


SURE_EARLY = (0.0, 0.996, 0.004, 0.0)
SURE_BENIGN = (0.996, 0.004, 0.0, 0.0)


def test_agreeing_fields_are_called_with_their_mean_probability():
    call = cases.call_case(fields(SURE_EARLY, SURE_EARLY, (0.02, 0.9, 0.08, 0.0)),
                           [None] * 3, LABELS)
    assert (call.label, call.reason, call.guess) == ("Early", None, "Early")
    assert call.probability == pytest.approx((0.996 * 2 + 0.9) / 3)
    assert call.counts == {"Benign": 0, "Early": 3, "Pre": 0, "Pro": 0}
    assert call.discordance == pytest.approx(0.0) and call.fields == call.accepted == 3


def test_one_hesitant_dissent_is_explained_but_confident_fields_of_two_classes_are_not():
    hesitant = (0.355, 0.645, 0.0, 0.0)  # a Benign field called Early, just above the floor
    call = cases.call_case(fields(*[SURE_BENIGN] * 3, hesitant), [None] * 4, LABELS)
    assert call.label == "Benign" and call.counts["Early"] == 1
    assert call.discordance == pytest.approx(np.log(0.645 / 0.355) / 4)
    mixed = cases.call_case(fields(*[SURE_EARLY] * 3, *[SURE_BENIGN] * 2), [None] * 5, LABELS)
    assert (mixed.label, mixed.reason, mixed.guess) == (cases.REFER, cases.DISCORDANT, "Early")
    assert "Benign 2, Early 3" in mixed.detail
    # Benign beside Pro-B, each field sure of itself: two such fields in five are enough ...
    pro = (0.0, 0.0, 0.0, 0.996)
    assert cases.call_case(fields(*[pro] * 3, SURE_BENIGN, SURE_BENIGN), [None] * 5,
                           LABELS).reason == cases.DISCORDANT
    # ... one in five is tolerated (a misread field), and counted where a person sees it
    one = cases.call_case(fields(*[pro] * 4, SURE_BENIGN), [None] * 5, LABELS)
    assert (one.label, one.reason, one.counts["Benign"]) == ("Pro", None, 1)
    # fewer than five fields tolerate none
    assert cases.call_case(fields(*[pro] * 3, SURE_BENIGN), [None] * 4, LABELS).reason == \
        cases.DISCORDANT


def test_the_case_label_is_the_class_that_leaves_the_least_unexplained():
    rng = np.random.default_rng(0)
    for _ in range(200):  # below TOLERATED_FROM fields, where no field is left out
        logp = cases.log_evidence(rng.dirichlet(np.full(4, 0.3), size=rng.integers(
            1, cases.TOLERATED_FROM)), cases.CaseRule.eps)
        label = cases.case_label(logp)
        assert all(cases.discordance(logp, label) <= cases.discordance(logp, c) + 1e-12
                   for c in range(4))


def test_referred_fields_carry_no_evidence_and_their_reasons_stand_when_all_are_referred():
    probs = fields(SURE_BENIGN, SURE_EARLY, SURE_EARLY)
    call = cases.call_case(probs, ["out-of-domain", None, None], LABELS)
    assert call.label == "Early" and call.accepted == 2 and call.referred == {"out-of-domain": 1}
    few = cases.call_case(probs, ["out-of-domain", "low-confidence", None], LABELS)
    assert (few.label, few.reason, few.guess) == (cases.REFER, cases.TOO_FEW_FIELDS, "Early")
    every = cases.call_case(probs, ["out-of-domain", "low-confidence", "out-of-domain"], LABELS)
    assert every.reason == "out-of-domain+low-confidence" and every.guess is None
    assert "all 3 fields referred: out-of-domain 2, low-confidence 1" == every.detail
    loose = cases.CaseRule(min_fields=1)
    assert cases.call_case(probs[1:2], [None], LABELS, loose).label == "Early"


def test_a_case_with_no_image_or_no_readable_image_is_referred_with_that_reason():
    empty = cases.call_case(np.zeros((0, 4)), [], LABELS)
    assert (empty.label, empty.reason, empty.fields) == (cases.REFER, cases.NO_IMAGES, 0)
    unread = cases.call_case(np.zeros((0, 4)), [], LABELS, failed=2)
    assert unread.reason == cases.NO_READABLE_IMAGE and "2 image files" in unread.detail


def test_pseudo_cases_follow_the_stated_protocol():
    y = np.repeat([0, 1, 2, 3], [40, 78, 77, 3])  # the last class too small for 5 fields
    rng = np.random.default_rng(0)
    single = cases.pseudo_cases(y, 5, 300, rng)
    assert len(single) == 300 and {c for _, (c,) in single} == {0, 1, 2}
    assert all(len(set(idx)) == 5 and set(y[idx]) == {c} for idx, (c,) in single)
    for k, (low, high) in ((3, (1, 1)), (5, (2, 2)), (10, (4, 5))):
        assert cases.mixed_minority(k) == (low, high)
        for idx, (a, b) in cases.pseudo_cases(y, k, 200, rng, mixed=True):
            assert len(set(idx)) == k and a != b and set(y[idx]) == {a, b}
            assert low <= (y[idx] == b).sum() <= high
    assert cases.pseudo_cases(y, 1, 10, rng, mixed=True) == []


def test_the_rule_travels_as_bytes_and_is_found_among_a_models_files():
    rule = cases.CaseRule(3, 0.85, fit={"split": "validation"})
    assert cases.CaseRule.from_bytes(rule.to_bytes()) == rule
    assert cases.stored_rule({cases.CASE_FILE: rule.to_bytes()}) == rule
    assert cases.stored_rule({"domain.json": b"{}"}) is None


def test_fitting_refers_mixtures_and_keeps_single_class_cases_on_made_up_fields():
    """Four classes, fields right 97 % of the time, wrong ones hesitant: the fitted threshold
    separates one class from two, and one field alone is not enough at 99.5 %."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 60)
    probs = np.full((len(y), 4), 0.002)
    wrong = rng.random(len(y)) < 0.03
    for i, c in enumerate(y):
        other = (c + 1) % 4
        probs[i, c], probs[i, other] = (0.35, 0.644) if wrong[i] else (0.994, 0.0)
    reasons = [None] * len(y)
    rule = cases.fit_rule(probs, reasons, y)
    assert rule.min_fields == 2 and 0.2 < rule.max_discordance < 1.5
    assert rule.fit["split"] == "validation" and rule.fit["pseudo_cases"]["mixed"] == 6000
    assert rule == cases.fit_rule(probs, reasons, y)  # seeded
    result = cases.evaluate(probs, reasons, y, LABELS, rule, sizes=(5,), n=2000)[5]
    assert result["single"]["referred"] < 0.03 and result["mixed"]["referred"] > 0.9


@pytest.mark.slow
@pytest.mark.tensorflow
def test_convert_stores_a_case_rule_fitted_on_the_validation_split(tiny_run, tiny_tflite):
    from hemalite.edge.runtime import load_model
    from hemalite.train import data

    labels = data.read_labels(tiny_run / "labels.txt")
    validation = data.read_manifest(tiny_run / "splits" / "val.csv", labels)
    for path in tiny_tflite.values():
        rule = cases.stored_rule(load_model(path).info.files)
        assert rule is not None, path
        assert rule.fit["split"] == "validation" and rule.fit["images"] == len(validation)
        assert rule.min_fields >= 1 and rule.max_discordance > 0


# ----------------------------------------------------------------- real fields, bundled model
TEST_SPLIT = REPO / "hemalite" / "models" / "test_split.csv"
RULE = ("--case-min-fields", "2", "--case-max-discordance", "0.7")  # whatever the model stores


def run_cli(*args):
    return CliRunner().invoke(classify_command, [str(a) for a in args])


def held_out_images(per_class: int) -> dict[str, list[Path]]:
    """The first images of each class in the bundled model's test split (never trained on)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    out: dict[str, list[Path]] = {}
    with open(TEST_SPLIT, newline="") as fh:
        for row in csv.DictReader(fh):
            if len(out.setdefault(row["label"], [])) < per_class:
                out[row["label"]].append(SHARED_DATA / row["path"])
    return out


@pytest.fixture(scope="module")
def bundled():
    from hemalite.edge.runtime import default_model_path, load_model

    return load_model(default_model_path(), num_threads=1)


@pytest.fixture(scope="module")
def sure_fields(bundled) -> dict[str, list[Path]]:
    """Per class, test-split images the bundled model accepts as their own class."""
    from hemalite.contract import load_image, preprocess
    from hemalite.edge.assess import assess

    check, spec = bundled.domain, bundled.info.spec
    floor = check.min_confidence if check else 0.0
    sure = {}
    for label, paths in held_out_images(12).items():
        sure[label] = []
        for path in paths:
            a = assess(bundled, preprocess(load_image(path, spec), spec), floor, True)
            if a.reason is None and bundled.info.labels[int(a.probabilities.argmax())] == label:
                sure[label].append(path)
    return sure


def test_the_rule_on_real_pseudo_cases_of_held_out_images(bundled):
    """The bench's own measurement on 20 test images per class: five fields of one class
    are called right, fields of two classes referred."""
    from hemalite.benchmarks.cases import evaluate_cases
    from hemalite.contract import load_image, preprocess

    spec, labels = bundled.info.spec, bundled.info.labels
    images = [(path, label) for label, paths in held_out_images(20).items() for path in paths]
    x = np.stack([preprocess(load_image(p, spec), spec) for p, _ in images])
    y = np.array([labels.index(label) for _, label in images])
    result = evaluate_cases(bundled.path, x, y, labels, threads=1, sizes=(1, 5), n=400)
    single, mixed = result["sizes"]["5"]["single"], result["sizes"]["5"]["mixed"]
    assert single["cases"] == mixed["cases"] == 400
    assert single["accuracy_accepted"] >= 0.99 and single["referred"] <= 0.1
    assert mixed["referred"] >= 0.9
    one = result["sizes"]["1"]["single"]  # one field is never a case under min_fields >= 2
    rule = cases.CaseRule(**result["rule"])
    assert rule.min_fields < 2 or one["referred"] == 1.0


def link_case(folder: Path, paths, sub: str = "") -> Path:
    """A case folder of symbolic links to real images (the images are never copied)."""
    (folder / sub).mkdir(parents=True, exist_ok=True)
    for path in paths:
        os.symlink(path, folder / sub / path.name)
    return folder


@pytest.fixture(scope="module")
def case_run(sure_fields, tmp_path_factory):
    """One edge-classify --cases run over five real case folders: one class, two classes
    (one nested deeper), empty, unreadable files only, a single field."""
    root = tmp_path_factory.mktemp("cases") / "patients"
    link_case(root / "p01", sure_fields["Early"][:5])
    link_case(link_case(root / "p02", sure_fields["Pre"][:3]), sure_fields["Benign"][:2], "more")
    (root / "p03").mkdir()
    (root / "p04").mkdir()
    (root / "p04" / "empty.jpg").write_bytes(b"")
    (root / "p04" / "text.png").write_text("not an image")
    link_case(root / "p05", sure_fields["Benign"][2:3])
    out = root.parent / "out"
    result = run_cli(root, "--cases", *RULE, "--case-csv", out / "cases.csv", "--case-jsonl",
                     out / "cases.jsonl", "--jsonl", out / "images.jsonl", "--csv",
                     out / "images.csv", "--case-report", out / "report")
    return root, out, result


def test_each_case_folder_gets_one_call_and_the_run_goes_on(case_run):
    _, out, result = case_run
    assert result.exit_code == 1, result.output  # as without --cases: two files failed
    rows = {r["case"]: r for r in csv.DictReader((out / "cases.csv").open())}
    assert list(rows) == ["p01", "p02", "p03", "p04", "p05"]
    assert (rows["p01"]["label"], rows["p01"]["accepted_Early"], rows["p01"]["fields"]) == \
        ("Early", "5", "5")
    assert (rows["p02"]["label"], rows["p02"]["reason"]) == ("REFER", "discordant")
    assert (rows["p02"]["accepted_Pre"], rows["p02"]["accepted_Benign"]) == ("3", "2")
    assert (rows["p03"]["reason"], rows["p03"]["fields"]) == ("no-images", "0")
    assert (rows["p04"]["reason"], rows["p04"]["failed"]) == ("no-readable-image", "2")
    assert (rows["p05"]["reason"], rows["p05"]["guess"]) == ("too-few-fields", "Benign")
    lines = result.output.splitlines()
    assert "case p03: REFER no-images (no image file in the case folder)" in lines
    assert "case p04: REFER no-readable-image (none of 2 image files could be read)" in lines
    table = lines.index(next(x for x in lines if x.startswith("cases (one call per case")))
    assert table > max(i for i, x in enumerate(lines) if "\tEarly\t" in x)  # after the images
    assert lines[table + 1].split() == ["case", "label", "prob", "fields", "accepted", "Benign",
                                        "Early", "Pre", "Pro", "reason"]
    assert "5 cases: 1 called (Early 1), 4 REFER" in result.output


def test_case_rows_have_the_same_columns_in_csv_and_jsonl(case_run):
    _, out, _ = case_run
    columns = ["case", "label", "reason", "probability", "fields", "accepted", "accepted_Benign",
               "accepted_Early", "accepted_Pre", "accepted_Pro", "guess", "discordance",
               "referred", "failed", "truth", "detail", "folder"]
    with (out / "cases.csv").open() as fh:
        assert next(csv.reader(fh)) == columns
    rows = [json.loads(x) for x in (out / "cases.jsonl").read_text().splitlines()]
    assert [list(r) for r in rows] == [columns] * 5
    assert rows[0]["probability"] > 0.9 and rows[2]["probability"] is None
    images = [json.loads(x) for x in (out / "images.jsonl").read_text().splitlines()]
    assert {r["case"] for r in images} == {"p01", "p02", "p04", "p05"}
    assert "probabilities" not in images[0]  # the per-image rows stay as they were, plus case
    with (out / "images.csv").open() as fh:
        assert next(csv.reader(fh))[-1] == "case"


def test_a_fields_decision_is_the_same_alone_and_inside_its_case(case_run):
    """Two faces, one decision: each field of the mixed case classified by itself."""
    root, out, _ = case_run
    inside = {Path(r["source"]).name: r for r in
              map(json.loads, (out / "images.jsonl").read_text().splitlines())
              if r["case"] == "p02"}
    assert len(inside) == 5
    for path in sorted((root / "p02").rglob("*.jpg")):
        alone = run_cli(path, "--jsonl", out / "alone.jsonl")
        assert alone.exit_code == 0, alone.output
        row = json.loads((out / "alone.jsonl").read_text())
        theirs = inside[path.name]
        assert (row["label"], row["reason"], row["probability"], row["top"]) == \
            (theirs["label"], theirs["reason"], theirs["probability"], theirs["top"])


def test_the_case_report_shows_the_call_the_fields_heatmaps_and_the_referred(case_run):
    _, out, _ = case_run
    report = out / "report"
    index = (report / "index.md").read_text()
    assert "[report](p02/report.md)" in index and "| p03 | REFER | no-images |" in index
    mixed = (report / "p02" / "report.md").read_text()
    assert mixed.startswith("# Case p02: REFER (discordant)")
    assert "research and screening aid" in mixed and mixed.count("<img ") == 5
    for name in (n.split('"')[0] for n in mixed.split('<img src="')[1:]):
        assert (report / "p02" / name).stat().st_size > 0, name
    unread = (report / "p04" / "report.md").read_text()
    assert "## Unreadable files" in unread and "empty.jpg" in unread
    assert "No image file" in (report / "p03" / "report.md").read_text()


def colour_cases(root: Path) -> Path:
    for case, colour in (("a", (210, 40, 40)), ("b", (40, 60, 200))):
        (root / case).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40, 40), colour).save(root / case / f"{i}.png")
    return root


def test_a_model_without_a_case_rule_says_so_in_one_line_and_flags_override(tmp_path):
    root = colour_cases(tmp_path / "cases")
    result = run_cli(root, "--cases", "--model", TINY_INT8, "--no-domain-check")
    assert result.exit_code == 0, result.output
    notes = [x for x in result.output.splitlines() if "carries no case rule" in x]
    assert len(notes) == 1 and "min fields 2, max discordance 0.70" in notes[0]
    assert "2 cases: 2 called (blue 1, red 1), 0 REFER" in result.output
    strict = run_cli(root, "--cases", "--model", TINY_INT8, "--no-domain-check",
                     "--case-min-fields", "4", "--case-max-discordance", "0.5")
    assert "carries no case rule" not in strict.output
    assert "2 cases: 0 called, 2 REFER (too-few-fields 2)" in strict.output
    assert "(defaults, the model stores none, flags given)" in strict.output


@pytest.mark.parametrize("args, words", [
    (["--video", "x.avi"], "not a camera or a video"),
    (["some.jpg"], "give a folder whose sub-folders are the cases"),
    (["{folder}", "--heatmaps", "h", "--case-report", "r"], "--heatmaps and --case-report")])
def test_cases_refuse_what_they_cannot_group(tmp_path, args, words):
    args = [a.format(folder=tmp_path) for a in args]
    result = run_cli(*args, "--cases", "--model", TINY_INT8)
    assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.slow
def test_the_bundled_models_stored_rule_is_its_validation_fit(bundled):
    """The case rule stored in the bundled model is what hemalite convert's fit gives on its
    validation split (the split `hemalite train` made with seed 42), refitted here from the
    edge: the stored numbers are reproducible, not typed in."""
    from hemalite.contract import load_batch
    from hemalite.convert.case_rule import assess_images
    from hemalite.train import data

    stored = cases.stored_rule(bundled.info.files)
    assert stored is not None, "the bundled model carries no case rule"
    if bundled.runtime != "ai_edge_litert":  # other int8 kernels move a few probabilities
        pytest.skip("the defaults were fitted with LiteRT, the default runtime")
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    samples, labels, _ = data.scan_dataset(SHARED_DATA)
    splits, _ = data.split_dataset(samples)
    with open(TEST_SPLIT, newline="") as fh:
        assert [s.path for s in splits["test"]] == [r["path"] for r in csv.DictReader(fh)]
    x, kept, _ = load_batch([SHARED_DATA / s.path for s in splits["val"]], bundled.info.spec)
    probabilities, reasons = assess_images(bundled.path, x)
    rule = cases.fit_rule(probabilities, reasons, np.array([splits["val"][i].label for i in kept]))
    assert (rule.min_fields, rule.max_discordance) == (stored.min_fields,
                                                       stored.max_discordance)


def test_cases_are_the_sub_folders_of_each_folder_given_in_the_search_order(tmp_path):
    from hemalite.edge import cases as edge_cases
    from hemalite.edge import sources

    root = tmp_path / "patients"
    for name in ("b/x/deep", "d", "a", "c"):
        (root / name).mkdir(parents=True)
    for name in ("loose.png", "b/x/deep/1.png", "b/2.png", "d/3.png"):
        Image.new("RGB", (8, 8)).save(root / name)
    inputs = list(sources.find_images([str(root), str(root / "d" / "3.png")]))
    groups = edge_cases.group_cases(inputs, sources.folders([str(root), str(tmp_path / "p*")]))
    assert [(g.name, len(g.inputs)) for g in groups] == [
        (None, 1), ("a", 0), ("b", 2), ("c", 0), ("d", 1), (None, 1)]
    assert [p for g in groups for p, _ in g.inputs] == [p for p, _ in inputs]  # same order


def test_the_case_rule_flags_without_cases_are_refused_not_ignored(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image)
    result = CliRunner().invoke(classify_command, ["--model", str(TINY_INT8), str(image),
                                                   "--case-min-fields", "3"])
    assert result.exit_code == 2 and "add --cases" in result.output
