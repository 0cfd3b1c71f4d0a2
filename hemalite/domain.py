"""Is this image of the kind the model knows? The domain check, carried by the model file.

A four-class softmax always answers, and confidently so on images unlike any it was trained
on (another stain, another magnification, healthy cells from another lab). The check:

1. the model's own features: the .tflite has an output `domain` = the pooled backbone
   features projected and whitened (z = W f + b, fitted on the training split by
   `hemalite convert`), so the class-conditional Mahalanobis distance with a tied
   covariance is a plain squared distance on the device:  score = min_c |z - m_c|^2 / k;
2. the physical things a lab changes at the microscope (hemalite.acquisition: exposure,
   magnification, focus, stain), each with its own reason and fix, checked first;
3. an outlier score on the same whitened features: a logistic regression fitted by
   `hemalite convert` between the training images and synthetic outliers made from them
   (synthetic_outliers: single-cell close-ups and shrunk fields beyond the magnifications
   training jitters over, hue, lamp and focus far beyond it). The class-distance score of
   1. misses images whose features stay near a class mean (measured: it flagged none of the
   close-ups of healthy cells that the model called malignant); what separates those is a
   direction in feature space, which the regression finds.

Thresholds are set on the validation split at a stated in-domain acceptance (the feature
score's also on 700 training images, the larger of the two); the test split is never used. The fitted numbers travel inside the .tflite as `domain.json`. numpy only.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from hemalite import acquisition, shifts

DOMAIN_FILE = "domain.json"
OUT_OF_DOMAIN, LOW_CONFIDENCE, NO_LEUKOCYTE = "out-of-domain", "low-confidence", "no-leukocyte"


def fit_whitening(features: np.ndarray, labels: np.ndarray, dims: int = 64,
                  shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, b, class means) so that z = f @ W + b has identity within-class covariance.

    The top `dims` principal directions of the training features, then the tied
    within-class covariance in that subspace, shrunk towards its mean variance (fewer
    images than dimensions otherwise make it singular) and inverted by its square root.
    """
    features, labels = np.asarray(features, np.float64), np.asarray(labels)
    mean = features.mean(0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    basis = vt[:dims].T  # (d, dims)
    projected = (features - mean) @ basis
    classes = np.unique(labels)
    class_means = np.stack([projected[labels == c].mean(0) for c in classes])
    residual = projected - class_means[np.searchsorted(classes, labels)]
    cov = np.cov(residual, rowvar=False)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    values, vectors = np.linalg.eigh(cov)
    inv_sqrt = vectors @ np.diag(values ** -0.5) @ vectors.T
    weights = basis @ inv_sqrt
    bias = -mean @ weights
    return weights.astype(np.float32), bias.astype(np.float32), \
        (class_means @ inv_sqrt).astype(np.float32)


def features_vary(features: np.ndarray, min_spread: float = 1e-3) -> bool:
    """Whether the features differ between images enough to whiten: mean per-feature
    standard deviation at least `min_spread` x their mean magnitude. A barely trained model
    gives (nearly) the same features for every image; whitening them multiplies by ~1e8,
    and LiteRT's XNNPACK delegate aborts the process on such an int8 graph (measured with
    LiteRT 2.3.0 on a 1-epoch from-scratch model: spread 3e-7)."""
    features = np.asarray(features, np.float64)
    return bool(features.std(0).mean() >= min_spread * (np.abs(features).mean() + 1e-12))


def feature_score(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """min over classes of the mean squared distance to the class mean: (N,) or scalar."""
    z = np.atleast_2d(np.asarray(z, np.float64))
    d = ((z[:, None, :] - np.asarray(means, np.float64)[None]) ** 2).mean(-1).min(-1)
    return d if d.size > 1 else d.reshape(-1)


@dataclass
class DomainCheck:
    """The fitted check: feature means and threshold, the acquisition check, confidence floor."""

    means: list  # (classes, dims) class means in whitened feature space
    threshold: float  # feature score above this: out of domain
    acceptance: float  # share of validation (and training) images accepted at `threshold`
    acquisition: dict = field(default_factory=dict)  # hemalite.acquisition.AcquisitionCheck
    min_confidence: float = 0.0  # the recommended floor, `--min-confidence auto`
    leukocytes: bool = True  # training images show stained leukocytes: an image without any
    #                          is referred (no-leukocyte) instead of classified
    outlier: dict = field(default_factory=dict)  # {weights, bias, threshold}: score 3.

    def feature_score(self, z: np.ndarray) -> float:
        return float(feature_score(z, np.asarray(self.means))[0])

    def outlier_score(self, z: np.ndarray) -> float | None:
        """The outlier regression's logit for whitened features z (None without one)."""
        if not self.outlier:
            return None
        return float(np.ravel(z) @ np.asarray(self.outlier["weights"]) + self.outlier["bias"])

    @functools.cached_property
    def acquisition_check(self) -> acquisition.AcquisitionCheck | None:
        """The acquisition check, parsed once (it is asked about every image)."""
        return acquisition.from_dict(self.acquisition) if self.acquisition else None

    def acquisition_faults(self, measures: dict) -> list[tuple[float, str, str]]:
        """(severity, reason, detail) of what is wrong at the microscope, worst first."""
        check = self.acquisition_check
        return check.faults(measures) if check else []

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "DomainCheck":
        from dataclasses import fields

        from hemalite.metadata import MetadataError

        values = json.loads(data)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:  # e.g. 'ranges', the cell ranges the acquisition check replaced
            raise MetadataError(f"{DOMAIN_FILE} has fields this hemalite does not know "
                                f"({', '.join(sorted(unknown))}): the model was made by "
                                "another version; convert it again (`hemalite convert`)")
        return cls(**values)


def synthetic_outliers(images: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One image not of this domain from each image, of a random kind: a single-cell close-up
    (zoom 1.8-3.5, past training's magnification jitter of 0.65-1.6), a field shrunk to
    0.3-0.5, hue turned by 40-70 degrees, lamp x1.5-1.7 or x0.45-0.6, or defocus of radius
    3-4.5. Sizes vary: preprocess them. The benchmark's out-of-domain material uses other
    strengths (hemalite.shifts.STRONG_SHIFTS) and other images (the test split)."""
    out = []
    for rgb in images:
        kind, sign = rng.integers(6), rng.choice([-1.0, 1.0])
        if kind == 0:
            made = shifts.closeup(rgb, rng.uniform(1.8, 3.5))
        elif kind == 1:
            made = shifts.magnification(rgb, rng.uniform(0.3, 0.5))
        elif kind == 2:
            made = shifts.hue(rgb, sign * rng.uniform(40, 70))
        elif kind == 3:
            made = shifts.brightness(rgb, rng.uniform(1.5, 1.7) if sign > 0
                                     else rng.uniform(0.45, 0.6))
        else:  # defocus counts twice: nothing else blurs the nuclei's texture
            made = shifts.blur(rgb, rng.uniform(3.0, 4.5))
        if made is not None:
            out.append(made)
    return out


def fit_outlier(z_in: np.ndarray, z_out: np.ndarray) -> dict:
    """Logistic regression, in-domain (0) against synthetic outliers (1), on whitened
    features: {weights, bias}; the threshold is set later on validation images."""
    from sklearn.linear_model import LogisticRegression  # convert only (train extra)

    x = np.concatenate([z_in, z_out]).astype(np.float64)
    y = np.r_[np.zeros(len(z_in)), np.ones(len(z_out))]
    reg = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(x, y)
    return {"weights": np.round(reg.coef_[0], 6).tolist(), "bias": float(reg.intercept_[0])}


def stained_share(measures: list[dict]) -> float:
    """Share of images in which the stain mask finds at least one leukocyte."""
    return float(np.mean([m["cells"] > 0 for m in measures])) if measures else 0.0


REFERRAL_BUDGET = 0.03  # of in-domain images, all reasons together (validation split)


def operating_floor(confidence: np.ndarray, correct: np.ndarray, referred: np.ndarray,
                    budget: float = REFERRAL_BUDGET) -> float:
    """The confidence floor of the operating point: the best accuracy on what is accepted
    while all reasons together (`referred`: no leukocyte or out of domain already) refer at
    most `budget` of the images. A lab can live with a few referrals, not with many."""
    referred = np.asarray(referred, bool)
    kept = ~referred
    if referred.mean() >= budget or not kept.any():
        return 0.0
    min_coverage = 1.0 - (budget - referred.mean()) / kept.mean()
    return recommend_floor(np.asarray(confidence)[kept], np.asarray(correct)[kept], min_coverage)


def recommend_floor(confidence: np.ndarray, correct: np.ndarray,
                    min_coverage: float = 0.97) -> float:
    """The lowest confidence floor that gives the best accuracy on the accepted images while
    keeping at least `min_coverage` of them (0.0 when no floor helps)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    best, best_acc = 0.0, correct.mean() if len(correct) else 1.0
    for floor in np.unique(confidence):
        kept = confidence >= floor
        if kept.mean() < min_coverage:
            break
        acc = correct[kept].mean()
        if acc > best_acc + 1e-12:
            best, best_acc = float(floor), acc
    return best
