"""The input contract: every valid image becomes RGB uint8 the same way; bad files raise."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from hemalite.contract import ImageError, InputSpec, load_image, preprocess
from tests.helpers import bad_files, unusual_images

SPEC = InputSpec(32, 32)


def test_unusual_images_become_rgb_uint8_of_the_right_colour(tmp_path):
    for name, colour in unusual_images(tmp_path).items():
        pixels = preprocess(load_image(tmp_path / name, SPEC), SPEC)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8, name
        assert np.allclose(pixels[16, 16], colour, atol=6), (name, pixels[16, 16])


def test_exif_rotation_is_honoured(tmp_path):
    image = Image.new("RGB", (60, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    pixels = load_image(tmp_path / "rotated.jpg")
    assert pixels.shape == (60, 20, 3)  # portrait once rotated
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 1] < 60  # the red strip is now on top


def test_each_bad_file_raises_one_clear_error(tmp_path):
    for name, reason in bad_files(tmp_path).items():
        with pytest.raises(ImageError) as err:
            load_image(tmp_path / name, SPEC)
        message = str(err.value)
        assert reason in message and "\n" not in message, (name, message)


def test_preprocess_resizes_only_and_keeps_raw_pixels():
    rgb = np.full((64, 48, 3), 77, np.uint8)
    out = preprocess(rgb, InputSpec(32, 32))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8 and (out == 77).all()
    same = np.zeros((32, 32, 3), np.uint8)
    assert preprocess(same, SPEC) is same


def test_preprocess_rejects_non_rgb_arrays():
    with pytest.raises(ValueError):
        preprocess(np.zeros((32, 32), np.uint8), SPEC)
    with pytest.raises(ValueError):
        preprocess(np.zeros((32, 32, 3), np.float32), SPEC)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_keep_the_umask_mode(tmp_path, umask):
    from hemalite.files import write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    (tmp_path / "new.txt").chmod(0o640)  # a file that exists keeps its own mode
    write_text(tmp_path / "new.txt", "y")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o640


def test_native_start_up_noise_is_held_back_and_the_rest_passes(capfd):
    from hemalite.files import native_noise_filtered

    with native_noise_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"


def test_a_zoom_undoes_another_objective_on_a_real_smear():
    """A site calibration's zoom (InputSpec.zoom): the centre of a field shrunk by
    another objective (x0.7) comes back close to the original; zoom 1 changes nothing."""
    from hemalite import shifts
    from tests.helpers import real_images

    rgb = np.asarray(Image.open(real_images(1)[0]).convert("RGB"))
    spec = InputSpec(224, 224)
    shrunk = shifts.magnification(rgb, 0.7)
    undone = preprocess(shrunk, InputSpec(224, 224, zoom=1 / 0.7)).astype(float)
    centre = slice(40, -40)
    error = np.abs(undone[centre, centre] - rgb[centre, centre]).mean()
    assert error < 0.5 * np.abs(shrunk[centre, centre].astype(float) - rgb[centre, centre]).mean()
    assert error < 12
    np.testing.assert_array_equal(preprocess(rgb, spec), preprocess(rgb, InputSpec(224, 224, zoom=1.0)))
    wide = preprocess(rgb, InputSpec(224, 224, zoom=0.5))
    assert wide.shape == (224, 224, 3)  # shrunk and mirrored out to the frame
    np.testing.assert_array_equal(wide[56:168, 56:168], preprocess(rgb, InputSpec(112, 112)))


def test_a_colour_step_undoes_another_stain_colour_on_a_real_smear():
    """A site calibration's colour step (InputSpec.hue, .saturation): a field whose stain
    was turned by -15 degrees and paled to x0.7 comes back close to the original; the
    defaults change nothing (training's pixels are never recoloured)."""
    from hemalite import shifts
    from tests.helpers import real_images

    rgb = preprocess(np.asarray(Image.open(real_images(1)[0]).convert("RGB")),
                     InputSpec(224, 224))
    moved = shifts.saturation(shifts.hue(rgb, -15), 0.7)
    undone = preprocess(moved, InputSpec(224, 224, hue=15, saturation=1 / 0.7)).astype(float)
    stained = np.ptp(rgb.astype(int), axis=2) > 40  # the coloured cells, not the background
    error = np.abs(undone - rgb)[stained].mean()
    assert error < 0.3 * np.abs(moved.astype(float) - rgb)[stained].mean()
    assert error < 5
    np.testing.assert_array_equal(preprocess(rgb, InputSpec(224, 224, hue=0.0, saturation=1.0)),
                                  rgb)
