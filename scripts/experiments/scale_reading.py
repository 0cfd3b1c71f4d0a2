"""How far the magnification reading falls short at other objectives, and whether leaving
out what the frame cuts reads truer (issue #30, session 16; not kept).

    .venv/bin/python scripts/experiments/scale_reading.py

Every second validation image through hemalite.shifts.magnification at x0.6 ... x1.6, read
as hemalite.acquisition reads the scale (variant 0), and with the red-cell peaks closer to
the frame than their own radius and the leukocytes touching the frame left out (variant 1).
Printed: the median reading and its two cues against the truth, and the share beyond 3
robust sds of the unshifted readings (the check's width; medians of these images).

Session 16: the leukocytes' size reads true once the frame's cut cells are left out (x1.5:
1.41 -> 1.52, x1.6: 1.51 -> 1.59), but the red cells still read 10 % short (1.38 at x1.5,
1.44 at x1.6) and the combined reading barely moves (x1.6: 1.444 -> 1.447, 51 % beyond 3
sds either way): the frame is not what shortens the red cells' reading.
"""
import csv, numpy as np, cv2
from pathlib import Path
from hemalite import shifts, cells, acquisition as acq
from hemalite.contract import load_image, preprocess, InputSpec
from hemalite.edge.runtime import load_model, default_model_path
spec = InputSpec(288, 288)
fitted = acq.from_dict(load_model(default_model_path()).domain.acquisition)
rows = list(csv.DictReader(open("runs/sweep/size288/splits/val.csv")))[::2]

def red_radius(rgb, outside, margin):
    """hemalite.acquisition.red_cell_radius, with peaks closer to the frame than their own
    radius left out when `margin`."""
    red = acq.red_cell_mask(rgb, outside)
    if red is None: return np.nan
    flood = np.pad(1 - red, 1, constant_values=1); cv2.floodFill(flood, None, (0, 0), 0)
    red = cv2.morphologyEx(red | flood[1:-1, 1:-1], cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    d = cv2.distanceTransform(red, cv2.DIST_L2, 5)
    peak = (d >= cv2.dilate(d, np.ones((7, 7), np.uint8))) & (d > 2)
    if margin:
        H, W = d.shape; yy, xx = np.mgrid[:H, :W]
        edge = np.minimum(np.minimum(yy, H - 1 - yy), np.minimum(xx, W - 1 - xx))
        peak &= edge >= d  # a peak closer to the frame than its own radius: a cut cell
    p = d[peak]
    return float(np.percentile(p, 75)) if p.size >= 3 else np.nan

def reading(rgb, variant):
    means = cells.block_means(rgb); ramp = cells.block_ramp(rgb, cells.block_score(means))
    found = cells.find_cells(rgb, ramp=ramp)
    rim = cv2.resize((cells.block_mask(rgb, ramp) > 0).view(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    r = red_radius(rgb, 1 - rim, variant)
    H, W = rgb.shape[:2]
    if variant:
        inner = [c for c in found if c.x > 0 and c.y > 0 and c.x + c.width < W and c.y + c.height < H]
        found = inner or found
    lk = float(np.median([np.sqrt(c.area) for c in found])) if found else np.nan
    return {"red_cell_radius": r, "leukocyte_size": lk}

for variant in (0, 1):
    base = [reading(preprocess(load_image(Path("../shared/data/all4") / r["path"]), spec), variant) for r in rows]
    meds = {k: np.nanmedian([b[k] for b in base]) for k in ("red_cell_radius", "leukocyte_size")}
    chk = acq.AcquisitionCheck({**fitted.medians, **meds}, {}, fitted.size_weights)
    s0 = np.log([chk.scale(b) for b in base]); sd = acq.robust_sd(s0[np.isfinite(s0)])
    print(f"variant {variant}: medians {meds}, as-is log-scale robust sd {sd:.3f}")
    for f in (0.6, 0.7, 1.3, 1.5, 1.6):
        m = [reading(preprocess(shifts.magnification(load_image(Path("../shared/data/all4") / r["path"]), f), spec), variant) for r in rows]
        s = np.log([chk.scale(x) for x in m])
        red = np.nanmedian([x["red_cell_radius"] for x in m]) / meds["red_cell_radius"]
        lk = np.nanmedian([x["leukocyte_size"] for x in m]) / meds["leukocyte_size"]
        print(f"   x{f}: scale median {np.exp(np.nanmedian(s)):.3f} (red {red:.3f}, leuk {lk:.3f}); beyond 3 sds {np.nanmean(np.abs(s - np.nanmedian(s0)) > 3 * sd):.2f}")
