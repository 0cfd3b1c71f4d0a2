"""Helpers shared by the test modules (test modules never import each other): tiny
generated datasets, paths to the shared data and committed tiny models, files that are
unusual or bad images, and checks used in several stages' tests."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data" / "all4"
IMAGENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_224_imagenet_no_top.weights.h5"
COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}
TINY_SIZE = 32
TINY_INT8 = REPO / "tests" / "data" / "tiny_int8.tflite"
NEEDS_TENSORFLOW = "needs TensorFlow (pip install '.[train]'); the edge tests do not"
# Tests that need TensorFlow carry the `tensorflow` marker: skipped, with this reason, on the
# edge install (`make test-edge`); `pytest -m "not tensorflow"` runs only the others.
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None


def make_dataset(root: Path, per_class: int = 16, size: int = 48, seed: int = 0,
                 colours=COLOURS) -> Path:
    """root/<colour>/img_NNN.png: a solid colour plus Gaussian noise, per class."""
    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 18, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"img_{i:03d}.png")
    return root


def nest(root: Path, subfolders=("sub one", "sub one/deep")) -> Path:
    """Move images of every class folder deeper: root/<class>/sub one/deep/img.png.

    The first image of each class stays where it is, the others go round the sub-folders.
    """
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for i, image in enumerate(sorted(class_dir.glob("*.png"))[1:]):
            target = class_dir / subfolders[i % len(subfolders)]
            target.mkdir(parents=True, exist_ok=True)
            image.rename(target / image.name)
    return root


def real_images(per_class: int = 2) -> list[Path]:
    """A few real smear images from ../shared (skip the test when the data is absent)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/all4 not present")
    return [p for d in sorted(SHARED_DATA.iterdir()) for p in sorted(d.iterdir())[:per_class]]


def unusual_images(folder) -> dict[str, tuple]:
    """Valid but unusual files -> the RGB colour expected at their centre."""
    folder.mkdir(parents=True, exist_ok=True)
    red = Image.new("RGB", (40, 30), (200, 30, 30))
    made = {}

    def keep(name, image, colour, **kw):
        image.save(folder / name, **kw)
        made[name] = colour

    keep("cmyk.jpg", red.convert("CMYK"), (200, 30, 30), quality=95)
    keep("gray.png", Image.new("L", (40, 30), 120), (120, 120, 120))
    rgba = Image.new("RGBA", (40, 30), (200, 30, 30, 255))
    keep("rgba.png", rgba, (200, 30, 30))
    keep("palette.gif", red.convert("P", palette=Image.Palette.ADAPTIVE), (200, 30, 30))
    sixteen = Image.fromarray(np.full((30, 40), 65535 // 2, dtype=np.uint16))
    keep("deep16.png", sixteen, (127, 127, 127))
    keep("plain.bmp", red, (200, 30, 30))
    keep("plain.tiff", red, (200, 30, 30))
    keep("plain.webp", red, (200, 30, 30), lossless=True)
    keep("progressive.jpg", red, (200, 30, 30), progressive=True, quality=95)
    keep("UPPER.JPG", red, (200, 30, 30), quality=95)
    frames = [Image.new("RGB", (40, 30), c).convert("P", palette=Image.Palette.ADAPTIVE)
              for c in ((200, 30, 30), (30, 30, 200))]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    made["animated.gif"] = (200, 30, 30)
    keep("tiny.png", Image.new("RGB", (3, 2), (200, 30, 30)), (200, 30, 30))
    keep("large.jpg", Image.new("RGB", (4000, 3000), (200, 30, 30)), (200, 30, 30),
         quality=90)
    return made


def bad_files(folder) -> dict[str, str]:
    """Bad inputs named like images -> a word their error message must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    good = folder / "_good.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    good.unlink()
    (folder / "text.png").write_bytes(b"this is not an image at all\n" * 10)
    Image.new("1", (12000, 12000)).save(folder / "bomb.png")
    os.symlink(folder / "nowhere.jpg", folder / "broken.jpg")
    (folder / "folder.jpg").mkdir()
    os.mkfifo(folder / "fifo.jpg")
    return {"empty.jpg": "empty", "truncated.jpg": "decode", "text.png": "decode",
            "bomb.png": "bomb", "broken.jpg": "broken symlink", "folder.jpg": "directory",
            "fifo.jpg": "not a regular file"}


def cli_defaults_differing(command, config_cls, skip=()) -> dict:
    """{option: (click default, config default)} where a command's default is not its
    config dataclass's: the defaults are written once, in the dataclass."""
    fields = {f.name: f.default for f in dataclasses.fields(config_cls)
              if f.default is not dataclasses.MISSING}
    def unset(default) -> bool:  # click's "no default" (a sentinel in click 8.2+, else None)
        return default is None or type(default).__name__ == "Sentinel"

    return {p.name: (p.default, fields[p.name]) for p in command.params
            if p.name in fields and p.name not in skip and not getattr(p, "is_flag", False)
            and p.default != fields[p.name]
            and not (unset(p.default) and fields[p.name] in (None, ()))}


# Debian's chromium and its chromedriver (`make browser`), for the page of `hemalite serve`.
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NEEDS_CHROMIUM = ("needs Debian's chromium and chromium-driver (make browser, or apt-get "
                  "install chromium chromium-driver)")
# Without the background-networking flags Chromium reaches for Google's services at start.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium(profile: Path, size: tuple[int, int] = (1280, 1000)):
    """A headless Chromium driven by Selenium through Debian's chromedriver, with a fresh
    profile folder. Both paths are given, so Selenium Manager never downloads anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                 f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
