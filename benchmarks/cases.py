"""Cases, measured: a model's case rule on pseudo-cases drawn from the benchmark's images.

The dataset has no patient identifiers, so every case here is a pseudo-case: k images drawn
from the benchmark's images (a test split), either of one class (single-class: the call
should be that class) or of two classes, the second giving at least 40 % of the fields
(1 of 3 at k = 3; mixed: the call should be REFER, since ALL is one disease per patient).
Each image is decided once, as edge-classify decides it by default (`assess` at the model's
stored floor, domain check on), and the model's rule (hemalite.cases; its documented defaults
for a model that stores none) calls every pseudo-case from those assessments. Images are
reused across pseudo-cases, and one real patient's fields share a slide and a stain, so real
cases are less independent than these: the figures say how the rule combines fields, not
how often a patient is called right.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

from hemalite import cases
from hemalite.edge.assess import assess
from hemalite.edge.runtime import load_model

SIZES = (1, 3, 5, 10)  # fields per pseudo-case
CASES = 4000  # pseudo-cases of each kind (single-class, mixed) per size
SEED = 0


def evaluate_cases(path: str, x: np.ndarray, y: np.ndarray, labels, threads: int = 2,
                   sizes=SIZES, n: int = CASES, seed: int = SEED) -> dict:
    """{rule, rule_source, images, referred_images, protocol, sizes{"k": {single, mixed}}}
    for one .tflite over preprocessed images x with true classes y (cases.evaluate)."""
    model = load_model(path, num_threads=threads)
    check = model.domain
    floor = check.min_confidence if check is not None else 0.0
    found = [assess(model, image, floor, True) for image in x]
    reasons = [a.reason for a in found]
    stored = cases.stored_rule(model.info.files)
    rule = stored or cases.CaseRule()
    sized = cases.evaluate(np.array([a.probabilities for a in found]), reasons, y, labels,
                           rule, sizes, n, seed)
    return {"rule": asdict(rule),
            "rule_source": "stored in the model" if stored else
                           "defaults (hemalite.cases.CaseRule): the model stores none",
            "images": int(len(y)), "referred_images": sum(r is not None for r in reasons),
            "protocol": {"cases_per_kind": n, "seed": seed, "mixed_share": cases.MIXED_SHARE,
                         "pseudo_cases": True},
            "sizes": {str(k): v for k, v in sized.items()}}
