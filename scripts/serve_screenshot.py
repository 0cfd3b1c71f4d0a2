"""The screenshot in docs/serve.md: `hemalite serve` run for real (the bundled model, a video as
its camera), driven by headless Chromium through the page's own controls, then photographed.

The smears it shows are drawn here, not taken from the dataset: the ALL dataset's (and BCCD's)
images must never be copied into the repository, and a screenshot of them is such a copy.
So the verdicts in the picture are the bundled model's real answers on drawings; that it
accepts some drawings as Pre is worth knowing in itself (docs/serve.md).

    make serve-screenshot   # runs: .venv-edge/bin/python scripts/serve_screenshot.py docs/serve.png
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # tests.helpers (appended: the installed hemalite comes first)


def smear(seed: int, size=(224, 224), leukocytes: int = 1, nucleus=(88, 52, 160),
          scale: float = 1.0) -> Image.Image:
    """A drawn smear: pale red cells on a pink ground, and purple-nucleus leukocytes."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = Image.new("RGB", size, (238, 226, 232))
    draw = ImageDraw.Draw(image)
    for _ in range(int(55 * w * h / 224 ** 2)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(9, 13) * scale
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(214, 170, 190), outline=(196, 150, 172))
        draw.ellipse([x - r / 2.2, y - r / 2.2, x + r / 2.2, y + r / 2.2], fill=(228, 200, 212))
    for _ in range(leukocytes):
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        outer = 30 * scale
        draw.ellipse([cx - outer, cy - outer, cx + outer, cy + outer], fill=(200, 190, 228))
        for _ in range(7):
            ox, oy = rng.normal(0, 6 * scale, 2)
            r = rng.uniform(14, 20) * scale
            draw.ellipse([cx + ox - r, cy + oy - r, cx + ox + r, cy + oy + r], fill=nucleus)
    noisy = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    noisy += rng.normal(0, 4, noisy.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """(a folder to upload, a video to use as the camera), all drawn."""
    import cv2

    slide = folder / "slide-17"
    slide.mkdir(parents=True)
    smear(9, nucleus=(70, 40, 140), scale=0.8).save(slide / "field-01.png")
    smear(1, scale=1.0).save(slide / "field-02.png")
    smear(6, nucleus=(110, 60, 170), scale=0.8).save(slide / "field-03.png")
    Image.new("RGB", (224, 224), (236, 226, 230)).save(slide / "field-04-empty.png")
    (slide / "field-05.jpg").write_bytes(b"a file named like an image that is not one\n")
    canvas = np.asarray(smear(3, size=(900, 400), leukocytes=4, scale=0.8))
    video = folder / "microscope.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 300))
    for step in range(60):  # the stage moving along the slide
        x = int(step * 8)
        writer.write(np.ascontiguousarray(canvas[50:350, x:x + 400][..., ::-1]))
    writer.release()
    return slide, video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(REPO / "docs" / "serve.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1900)
    args = parser.parse_args()

    from selenium.webdriver.support.ui import WebDriverWait

    from hemalite.edge.serve.cli import make_server
    from hemalite.edge.serve.session import ServeConfig
    from tests.helpers import CHROMEDRIVER, CHROMIUM, NEEDS_CHROMIUM, chromium

    if not (CHROMIUM and CHROMEDRIVER):
        sys.exit(NEEDS_CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="hemalite-screenshot-") as tmp:
        slide, video = make_inputs(Path(tmp))
        server, session = make_server(ServeConfig(video=str(video), port=0))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = chromium(Path(tmp) / "profile", (args.width, args.height))
        try:
            driver.get(f"http://127.0.0.1:{server.server_port}/")
            until = WebDriverWait(driver, 60, poll_frequency=0.2).until
            driver.find_element("id", "folder").send_keys(str(slide))
            driver.find_element("id", "classify").click()
            until(lambda d: d.find_element("id", "progress").text.startswith("5 sent"))
            until(lambda d: d.execute_script(
                "return [...document.images].every(i => !i.src || i.id === 'stream' || "
                "(i.complete && i.naturalWidth > 0))"))
            driver.find_element("id", "heatmap-toggle").click()
            until(lambda d: (d.find_element("id", "live-frame").text or "0").isdigit()
                  and int(d.find_element("id", "live-frame").text or 0) > 20)
            time.sleep(1.0)  # a heatmap frame on screen
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            png = Image.open(io.BytesIO(driver.get_screenshot_as_png()))
            png.convert("RGB").quantize(256).save(args.out, optimize=True)
            print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} kB)")
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
            session.close()


if __name__ == "__main__":
    main()
