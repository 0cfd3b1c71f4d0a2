"""Dataset scanning, stratified duplicate-aware splits and manifests (no TensorFlow)."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest

from hemalite.train import data
from tests.helpers import REPO, SHARED_DATA, make_dataset


def test_split_is_stratified_reproducible_and_keeps_duplicates_together(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=30)
    for i in range(5):  # byte-identical copies under other names
        shutil.copy(root / "red" / f"img_{i:03d}.png", root / "red" / f"copy_{i}.png")
    samples, labels, skipped = data.scan_dataset(root)
    assert labels == ("blue", "green", "red") and not skipped and len(samples) == 95
    splits, dup_groups = data.split_dataset(samples, (0.8, 0.1, 0.1), seed=3)
    assert dup_groups == 5
    where = {s.path: name for name, part in splits.items() for s in part}
    for i in range(5):
        assert where[f"red/img_{i:03d}.png"] == where[f"red/copy_{i}.png"]
    for name, part in splits.items():  # every class in every split, about 80/10/10
        counts = Counter(labels[s.label] for s in part)
        assert set(counts) == set(labels), name
    assert 70 <= len(splits["train"]) <= 82
    again, _ = data.split_dataset(samples, (0.8, 0.1, 0.1), seed=3)
    assert again == splits
    other, _ = data.split_dataset(samples, (0.8, 0.1, 0.1), seed=4)
    assert other != splits


def test_manifest_round_trip(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=4)
    samples, labels, _ = data.scan_dataset(root)
    data.write_manifest(tmp_path / "m.csv", samples, labels)
    assert data.read_manifest(tmp_path / "m.csv", labels) == samples
    first = (tmp_path / "m.csv").read_text()
    data.write_manifest(tmp_path / "m.csv", samples, labels)
    assert (tmp_path / "m.csv").read_text() == first


def test_non_images_are_skipped_and_named(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "red" / "notes.txt").write_text("hello")
    samples, _, skipped = data.scan_dataset(root)
    assert len(samples) == 9 and skipped == ["red/notes.txt: not an image file"]


def test_undecodable_image_is_counted_not_fatal(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "red" / "broken.png").write_bytes(b"not a png")
    samples, labels, _ = data.scan_dataset(root)
    x, y, failures = data.load_pixels(root, samples, data.InputSpec(16, 16), progress=False)
    assert len(x) == 9 and len(y) == 9 and len(failures) == 1
    assert f"{root}/red/broken.png: cannot decode" in failures[0]


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"), ("empty", "no class sub-folders"),
    ("single", "single class"), ("hollow", "has no images")])
def test_bad_dataset_folders_get_one_clear_error(tmp_path, case, message):
    root = tmp_path / "d"
    if case != "missing":
        root.mkdir()
    if case == "single":
        make_dataset(root, per_class=2, colours={"red": (200, 0, 0)})
    if case == "hollow":
        make_dataset(root, per_class=2)
        (root / "empty_class").mkdir()
    with pytest.raises(data.DatasetError, match=message):
        data.scan_dataset(root)


@pytest.mark.parametrize("name", [" lead", "trail ", "line\nbreak", "tab\there"])
def test_a_class_name_that_cannot_be_one_line_of_labels_is_refused(tmp_path, name):
    root = make_dataset(tmp_path / "d", per_class=2, colours={"red": (200, 0, 0),
                                                             name: (0, 0, 200)})
    with pytest.raises(data.DatasetError, match="rename it"):
        data.scan_dataset(root)


def test_labels_are_lines_and_may_hold_spaces(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=2, colours={"class A": (200, 0, 0),
                                                             "b-2": (0, 0, 200)})
    _, labels, _ = data.scan_dataset(root)
    data.write_labels(tmp_path / "labels.txt", labels)
    assert labels == ("b-2", "class A") == data.read_labels(tmp_path / "labels.txt")


def test_too_few_images_names_the_class_and_the_minimum(tmp_path):
    root = make_dataset(tmp_path / "d", per_class=12)
    for extra in sorted((root / "green").iterdir())[3:]:
        extra.unlink()
    # a copy is not another image to split: the message counts distinct images
    shutil.copy(root / "green" / "img_000.png", root / "green" / "copy.png")
    samples, labels, _ = data.scan_dataset(root)
    fractions = (0.8, 0.1, 0.1)
    splits, _ = data.split_dataset(samples, fractions)
    with pytest.raises(data.DatasetError, match=r"class 'green' has 3 distinct images \(4 "
                                                r"files\): too few .*at least 5 distinct "
                                                r"images per class"):
        data.check_split(splits, labels, fractions)
    assert data.smallest_class((0.6, 0.2, 0.2)) == 3 and data.smallest_class((0.9, 0, 0.1)) is None


def green_with_copies(root, copies: str):
    """Class green: 10 distinct images and 4 byte-identical copies (14 files), issue #34's
    class folder; `copies` says of what: four images once each, or one image four times."""
    for i in range(4):
        source = f"img_{i:03d}.png" if copies == "four pairs" else "img_000.png"
        shutil.copy(root / "green" / source, root / "green" / f"copy_{i}.png")
    return data.scan_dataset(root)


@pytest.mark.parametrize("copies", ["four pairs", "one image five times"])
def test_a_class_with_enough_distinct_images_gets_validation_and_test_despite_copies(
        tmp_path, copies):
    root = make_dataset(tmp_path / "d", per_class=10)
    samples, labels, _ = green_with_copies(root, copies)
    green = [s for s in samples if labels[s.label] == "green"]
    assert len(green) == 14 and len({s.digest for s in green}) == 10
    fractions = (0.8, 0.1, 0.1)
    for seed in range(40):  # the shuffle decides where the copies fall: many of them
        splits, _ = data.split_dataset(samples, fractions, seed)
        data.check_split(splits, labels, fractions)  # was "has 14 images: too few ..."
        where = {s.path: name for name, part in splits.items() for s in part}
        for name, part in splits.items():
            assert "green" in {labels[s.label] for s in part}, (seed, name)
        for i in range(4):
            assert where[f"green/copy_{i}.png"] == where[
                f"green/img_{i if copies == 'four pairs' else 0:03d}.png"], seed


def test_the_bundled_models_test_split_is_what_the_split_gives_the_dataset():
    """A class the file count already serves keeps its placement (issue #34's fix changes
    only classes whose validation or test share a duplicate group skipped): all4, with its
    35 pairs of byte-identical files, still splits into the bundled model's test split, so
    `make demo` still scores images the model never trained on, and a run being resumed
    (it splits again) keeps its split."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    samples, labels, _ = data.scan_dataset(SHARED_DATA)
    splits, duplicate_groups = data.split_dataset(samples, (0.8, 0.1, 0.1), seed=42)
    bundled = data.read_manifest(REPO / "hemalite" / "models" / "test_split.csv", labels)
    assert duplicate_groups == 35
    assert [s.path for s in splits["test"]] == [s.path for s in bundled]
