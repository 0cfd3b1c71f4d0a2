"""The magnification reading under a brighter or dimmer lamp (issue #29/#30, session 17;
a finding, nothing changed)

    .venv/bin/python scripts/experiments/lamp_scale.py

Each validation image through ImageEnhance.Brightness (shifts.brightness), its two size cues
against the same image as is (median ratio) and the combined scale. Session 17, one run:
lamp x0.85 / x0.9: 1.00; x1.1: red-cell radius 0.896, leukocyte size 0.966, scale 0.910;
x1.2: 0.715, 0.884, 0.775; x1.3: 0.572 (read on 87 %), 0.789, 0.652. A brighter lamp clips
the pale red cells and their central pallor into the background, so they read small: a site
under lamp x1.1 is read as zoom 1.1-1.13 (docs/calibration.md), and the zoom probe would ask
such images at the wrong size. A clipping-proof red-cell reading needs a refit of the
bundled model's check: left for the next session.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from common import arguments, split_rows  # this script's folder is on sys.path

from hemalite import acquisition, shifts
from hemalite.contract import load_image, preprocess
from hemalite.edge.runtime import load_model


LAMPS = (0.85, 0.9, 1.1, 1.2, 1.3)


def main() -> None:
    args = arguments(__doc__).parse_args()
    model = load_model(args.model)
    check = acquisition.from_dict(model.domain.acquisition)
    pixels = [preprocess(load_image(Path(args.data, p)), model.info.spec)
              for p, _ in split_rows(args.split, args.run)]
    base = [acquisition.measure(x) for x in pixels]
    for lamp in LAMPS:
        lit = [acquisition.measure(shifts.brightness(x, lamp)) for x in pixels]
        out = []
        for cue in ("red_cell_radius", "leukocyte_size"):
            r = np.array([a[cue] / b[cue] for a, b in zip(lit, base)])
            out.append(f"{cue} median ratio {np.nanmedian(r):.3f} "
                       f"(read {np.isfinite(r).mean():.2f})")
        scale = np.array([check.scale(a) / check.scale(b) for a, b in zip(lit, base)])
        print(f"lamp x{lamp}: " + "; ".join(out) + f"; scale {np.nanmedian(scale):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
