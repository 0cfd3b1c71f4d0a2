"""Could the red cells tell the magnification? A scale read off the background, measured.

    .venv/bin/python scripts/experiments/rbc_scale.py runs/cellsG [--every 2]

Red cells are about 7.5 um across in every lab, so their size in pixels would give an
objective's magnification, and undoing it before the model would keep the leukocytes' own
size as a cue (hematogones are smaller than blasts) while surviving another objective. The
scale here: the radially averaged autocorrelation of the inverted green channel, leukocytes
painted over with the background's median, read where it falls to 0.5 (a half-width that
grows linearly with the magnification). Prints its spread over the validation images as is,
per class, and the ratio shifted / as is under each audit shift (1.5 and 0.7 for the two
magnifications, 1 for everything else if the scale is usable). An experiment, not part of
hemalite.
"""
from __future__ import annotations

import argparse

import numpy as np

from hemalite import cells, shifts
from hemalite.convert.export import load_run
from hemalite.train import data


def autocorrelation_width(rgb: np.ndarray, level: float = 0.5) -> float:
    """Radius in pixels at which the background's normalised autocorrelation falls to
    `level` (nan when it never does)."""
    grey = 255.0 - rgb[..., 1].astype(np.float64)
    mask = cells.leukocyte_mask(rgb)
    grey[mask] = np.median(grey[~mask]) if (~mask).any() else grey.mean()
    grey -= grey.mean()
    h, w = grey.shape
    power = np.abs(np.fft.rfft2(grey, s=(2 * h, 2 * w))) ** 2  # zero-padded: no wrap-around
    ac = np.fft.irfft2(power)[:h, :w]
    ac /= ac[0, 0] + 1e-9
    radius = np.hypot(*np.mgrid[:h, :w]).astype(int).ravel()
    profile = np.bincount(radius, ac.ravel()) / np.bincount(radius)
    below = np.nonzero(profile < level)[0]
    if not len(below):
        return float("nan")
    i = below[0]
    return float(i - 1 + (profile[i - 1] - level) / (profile[i - 1] - profile[i]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--every", type=int, default=2,
                        help="every n-th validation image (the split is sorted by class)")
    args = parser.parse_args()
    run = load_run(args.run)
    x, y, _ = data.load_pixels(run.data_dir, run.samples("val")[::args.every], run.spec,
                               progress=False)
    base = np.array([autocorrelation_width(img) for img in x])
    print(f"as is: median {np.nanmedian(base):.2f} px, coefficient of variation "
          f"{np.nanstd(base) / np.nanmean(base):.3f} ({len(x)} validation images)")
    for c, name in enumerate(run.labels):
        if (y == c).any():
            print(f"  {name}: median {np.nanmedian(base[y == c]):.2f} px ({(y == c).sum()} images)")
    for name, value in shifts.AUDIT_SHIFTS:
        ratio = np.array([autocorrelation_width(shifts.apply_shift(img, name, value))
                          for img in x]) / base
        p10, p50, p90 = np.nanpercentile(ratio, [10, 50, 90])
        print(f"{shifts.shift_name(name, value):20s} shifted / as is: median {p50:.3f} "
              f"(10th-90th percentile {p10:.3f}-{p90:.3f})")


if __name__ == "__main__":
    main()
