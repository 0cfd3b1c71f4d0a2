"""The case rule of a converted model, fitted on the validation split and stored inside it.

Each variant's validation images go through the very decision the device makes
(`hemalite.edge.assess.assess` at the model's own operating point: its stored floor, the
domain check on), and `hemalite.cases.fit_rule` fits the rule on pseudo-cases of those
assessments. The test split is never used. The rule travels inside the .tflite as the
associated file `case.json`, beside `domain.json`.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from hemalite import cases
from hemalite.metadata import ModelInfo

log = logging.getLogger(__name__)


def assess_images(path: str | Path, x: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """(probabilities, REFER reasons or None) of each preprocessed image, as edge-classify
    decides it by default with this model file."""
    from hemalite.edge.assess import assess
    from hemalite.edge.runtime import load_model

    model = load_model(path)
    check = model.domain
    floor = check.min_confidence if check is not None else 0.0
    found = [assess(model, image, floor, True) for image in x]
    return np.array([a.probabilities for a in found]), [a.reason for a in found]


def with_case_rule(info: ModelInfo, path: str | Path, x: np.ndarray, y: np.ndarray,
                   seed: int = 0) -> ModelInfo:
    """`info` with the case rule fitted on validation images x, y through the model at
    `path` added to its associated files (cases.CASE_FILE)."""
    probabilities, reasons = assess_images(path, x)
    rule = cases.fit_rule(probabilities, reasons, y, cases.CaseFitConfig(seed=seed))
    log.info("%s: case rule %s (fitted on %d validation images)", Path(path).name,
             rule.describe(), len(y))
    return dataclasses.replace(info, files={**info.files, cases.CASE_FILE: rule.to_bytes()})
