"""The leukocyte mask on real smears, and the audit's shifts and ablations."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hemalite import cells, shifts
from tests.helpers import SHARED_DATA

# Leukocytes counted by eye on these images (touching cells would merge into one blob, so
# these were chosen with the cells apart; platelets and specks are not counted).
COUNTED_BY_EYE = {
    "Early/WBC-Malignant-Early-010.jpg": 4,
    "Pre/WBC-Malignant-Pre-010.jpg": 1,  # and one dark speck, which is not a leukocyte
    "Pro/WBC-Malignant-Pro-010.jpg": 4,
    "Pro/WBC-Malignant-Pro-072.jpg": 5,
}


def real(name: str) -> np.ndarray:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("name,count", COUNTED_BY_EYE.items())
def test_find_cells_matches_a_count_by_eye(name, count):
    assert len(cells.find_cells(real(name))) == count


def test_mask_covers_the_stain_not_the_slide_nor_the_scale_bar():
    rgb = real("Early/WBC-Malignant-Early-010.jpg")
    mask = cells.leukocyte_mask(rgb)
    assert 0.03 < mask.mean() < 0.4
    score = cells.stain_score(rgb)
    # purple inside (with the cytoplasm rim the mask adds), pale outside
    assert score[mask].mean() > score[~mask].mean() + 30
    assert not mask[shifts.annotation_box(*mask.shape)].any()  # red / black ink is not stain


def test_blank_and_red_ink_images_have_no_leukocyte():
    white = np.full((64, 64, 3), 245, np.uint8)
    red_ink = white.copy()
    red_ink[20:24, 10:50] = (220, 30, 40)
    for rgb in (white, red_ink):
        assert not cells.leukocyte_mask(rgb).any()
        assert cells.find_cells(rgb) == []


def test_neutralised_image_keeps_cells_and_greys_the_rest():
    rgb = real("Pro/WBC-Malignant-Pro-010.jpg")
    out = cells.neutralise_background(rgb)
    mask = cells.soft_mask(rgb)
    assert np.all(out[mask == 0] == cells.BACKGROUND)
    np.testing.assert_array_equal(out[mask == 1], rgb[mask == 1])


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = np.full((64, 64, 3), (230, 215, 235), np.uint8)
    rgb[20:40, 20:40] = (120, 60, 200)  # a purple "nucleus"
    return np.clip(rgb + rng.normal(0, 6, rgb.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name,value", shifts.AUDIT_SHIFTS + shifts.STRONG_SHIFTS)
def test_each_shift_is_deterministic_and_keeps_the_size(name, value):
    rgb = _image()
    a, b = shifts.apply_shift(rgb, name, value), shifts.apply_shift(rgb, name, value)
    assert a.shape == rgb.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, rgb)


def test_each_shift_changes_pixels_the_way_its_name_says():
    rgb = _image()
    grey = lambda a: a.astype(float).mean()  # noqa: E731
    assert grey(shifts.brightness(rgb, 1.2)) > grey(rgb) > grey(shifts.brightness(rgb, 0.85))
    assert shifts.contrast(rgb, 0.8).std() < rgb.std() < shifts.contrast(rgb, 1.2).std()
    spread = lambda a: (a.max(-1).astype(int) - a.min(-1)).mean()  # noqa: E731
    assert spread(shifts.saturation(rgb, 0.6)) < spread(rgb)
    # purple (hue ~260 deg) turned -15 deg loses red, turned +15 deg gains red
    nucleus = (slice(25, 35), slice(25, 35), 0)
    assert shifts.hue(rgb, -15)[nucleus].mean() < rgb[nucleus].mean() < shifts.hue(rgb, 15)[nucleus].mean()
    edges = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
    assert edges(shifts.blur(rgb, 1.5)) < edges(rgb)
    assert np.abs(shifts.jpeg(rgb, 30).astype(int) - rgb).mean() > 0.5
    # magnification 1.5: the centred square grows; 0.7: it shrinks
    area = lambda a: (cells.stain_score(a) > 60).mean()  # noqa: E731
    assert area(shifts.magnification(rgb, 1.5)) > area(rgb) > area(shifts.magnification(rgb, 0.7))
    np.testing.assert_array_equal(shifts.rotation(rgb, 90), np.rot90(rgb))


def test_stain_balance_moves_the_leukocytes_between_blue_violet_and_pink():
    rgb = real("Early/WBC-Malignant-Early-010.jpg")
    np.testing.assert_array_equal(shifts.stain(rgb, 1.0), rgb)  # exact at x1
    mask = cells.leukocyte_mask(rgb)

    def blue_over_red(a):
        return (a[mask][:, 2].astype(float) / (a[mask][:, 0] + 1)).mean()
    assert blue_over_red(shifts.stain(rgb, 0.75)) < blue_over_red(rgb) \
        < blue_over_red(shifts.stain(rgb, 1.33))
    # the unstained background (brightest tenth) barely moves; the leukocytes do
    light = rgb.sum(-1) >= np.percentile(rgb.sum(-1), 90)
    moved = np.abs(shifts.stain(rgb, 1.33).astype(int) - rgb).sum(-1)
    assert moved[light].mean() < 0.25 * moved[mask].mean()


def test_stain_balance_scales_each_stain_amount_along_its_own_colour():
    from skimage.color import hed_from_rgb, rgb_from_hed

    def pixel(amounts):  # an image of one colour made of these H, E, DAB optical densities
        density = np.asarray(amounts, float) @ rgb_from_hed
        return np.full((4, 4, 3), 256.0 * np.exp(-density) - 1.0).round().astype(np.uint8)

    def amounts(rgb):
        return (-np.log((rgb[0, 0].astype(float) + 1) / 256)) @ hed_from_rgb

    np.testing.assert_allclose(amounts(shifts.stain(pixel([0.4, 0, 0]), 1.5)), [0.6, 0, 0],
                               atol=0.01)  # haematoxylin-like: x factor
    np.testing.assert_allclose(amounts(shifts.stain(pixel([0, 0.3, 0]), 1.5)), [0, 0.2, 0],
                               atol=0.01)  # eosin-like: / factor


def test_stain_jitter_draws_nothing_unless_asked_then_log_uniformly(monkeypatch):
    applied, factors = [], []
    monkeypatch.setattr(shifts, "apply_shift", lambda rgb, name, value:
                        applied.append(name) or (name == "stain" and factors.append(value)) or rgb)
    monkeypatch.setattr(shifts, "magnification", lambda rgb, f: applied.append("mag") or rgb)

    class Counting:  # counts the draws, so that "off" provably draws nothing extra
        def __init__(self, seed):
            self.rng, self.calls = np.random.default_rng(seed), 0

        def __getattr__(self, name):
            self.calls += 1
            return getattr(self.rng, name)
    counting = Counting(7)
    for _ in range(50):
        shifts.random_acquisition(_image(), counting)
    assert "stain" not in applied  # off by default: G's recipe draws exactly as before
    # per image: one coin for the objective and one per photometric shift but the stain,
    # plus one strength for each shift applied; not one draw more
    assert counting.calls == 50 * len(shifts.JITTER) + len(applied)
    rng = np.random.default_rng(7)
    for _ in range(1000):
        shifts.random_acquisition(_image(), rng, stain_p=0.4)
    assert abs(len(factors) / 1000 - 0.4) < 0.05
    low, high = shifts.JITTER["stain"]
    assert min(factors) >= low and max(factors) <= high
    assert 0.4 < np.mean(np.array(factors) < 1) < 0.6  # log-uniform: as often pinker as bluer


def test_ablations_erase_what_they_say():
    rgb = real("Early/WBC-Malignant-Early-010.jpg")
    assert cells.find_cells(shifts.erase_leukocytes(rgb)) == []
    only = shifts.only_leukocytes(rgb)
    mask = cells.leukocyte_mask(rgb)
    np.testing.assert_array_equal(only[mask], rgb[mask])
    assert len(np.unique(only[~mask].reshape(-1, 3), axis=0)) == 1
    corner = shifts.mask_annotation(rgb)[shifts.annotation_box(*rgb.shape[:2])]
    assert len(np.unique(corner.reshape(-1, 3), axis=0)) == 1


def test_random_acquisition_varies_but_keeps_the_image():
    rgb = _image()
    rng = np.random.default_rng(1)
    outs = [shifts.random_acquisition(rgb, rng) for _ in range(5)]
    assert all(o.shape == rgb.shape and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 1


def test_random_acquisition_combines_shifts_in_the_microscope_order(monkeypatch):
    applied = []
    real = shifts.apply_shift
    monkeypatch.setattr(shifts, "apply_shift",
                        lambda rgb, name, value: applied.append(name) or real(rgb, name, value))
    order = ["blur", "brightness", "contrast", "saturation", "hue", "stain", "jpeg"]
    assert list(shifts.JITTER) == order  # optics, lamp, sensor, stain, then compression
    rng = np.random.default_rng(3)
    per_image = []
    for _ in range(200):
        applied.clear()
        shifts.random_acquisition(_image(), rng)
        assert applied == sorted(applied, key=order.index)  # focus before lamp ... JPEG last
        per_image.append(len(applied))
    assert max(per_image) >= 3 and min(per_image) == 0  # several at once, or none
    assert "stain" not in applied  # off unless asked (--stain-jitter)
    assert abs(np.mean(per_image) - shifts.JITTER_P * (len(order) - 1)) < 0.3


def test_random_acquisition_draws_objectives_below_and_above_x1_about_equally(monkeypatch):
    factors = []
    monkeypatch.setattr(shifts, "magnification", lambda rgb, f: factors.append(f) or rgb)
    rng = np.random.default_rng(5)
    for _ in range(2000):
        shifts.random_acquisition(_image(), rng)
    factors = np.array(factors)
    low, high = shifts.MAGNIFY
    assert factors.min() >= low and factors.max() <= high
    assert abs(len(factors) / 2000 - shifts.MAGNIFY_P) < 0.04
    # log-uniform: the share below x1 is log(1/low) / log(high/low), not (1-low)/(high-low)
    expected = np.log(1 / low) / np.log(high / low)
    assert abs((factors < 1).mean() - expected) < 0.05  # uniform would give 0.37


def test_closeups_centre_the_largest_leukocyte_and_skip_empty_fields():
    from hemalite.benchmarks.ood import closeups

    smear = real("Pre/WBC-Malignant-Pre-010.jpg")
    blank = np.full_like(smear, 235)
    outs = closeups(np.stack([smear, blank]))
    assert len(outs) == 1  # the blank field has no leukocyte to centre on
    out, cell = outs[0], cells.find_cells(smear)[0]
    side = max(cell.width, cell.height) * 2.5
    assert out.shape[0] == out.shape[1] and abs(out.shape[0] - side) <= 2
    mid = out.shape[0] // 2
    assert cells.leukocyte_mask(out)[mid - 2:mid + 3, mid - 2:mid + 3].all()
