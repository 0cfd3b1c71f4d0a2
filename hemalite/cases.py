"""One call per case: a patient's many fields of view, decided together. numpy only.

A case call aggregates the per-field assessments of `hemalite.edge.assess` (label or REFER
with its reason, and the full probability vector): it never re-runs the model and never
re-thresholds a field. Only the accepted fields (no REFER reason) carry evidence:

  label        the class with the largest summed log-probability over the accepted fields,
               each probability floored at `eps` (so one field's evidence against a class
               is capped at log(1 / eps), about 6.2 nats at 1/512);
  discordance  the mean over the accepted fields of log(p_own_best / p_label) (from five
               fields on, the most discordant one left out: one misread field is
               tolerated): how far the
               fields point to another class than the case's. 0 when every field agrees; a
               hesitant field (Early 0.65 beside Benign 0.35) adds 0.6 / n, a confident field
               of another class about 6.2 / n. The label is exactly the class that minimises
               it: the discordance is what one class leaves unexplained (ALL is one disease
               per patient: Benign fields beside Pro-B fields mean a person should look).

REFER reasons of a case, checked in this order:
  no-images           the case folder holds no image file;
  no-readable-image   none of its image files could be read;
  <fields' reasons>   every field was referred: their own reasons, most frequent first,
                      joined by '+' (e.g. 'out-of-domain+low-confidence');
  too-few-fields      fewer accepted fields than the rule's `min_fields`;
  discordant          discordance above the rule's `max_discordance`.

The rule's numbers are fitted by `hemalite convert` on pseudo-cases drawn from the
validation split (fit_rule) and travel inside the .tflite as the associated file
`case.json`. The dataset has no patient identifiers: a pseudo-case is k images of one class
(or of two, to see that mixtures are referred) drawn from one split's images; fields of one
real patient share a slide and a stain, so real cases are less independent than these.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

CASE_FILE = "case.json"  # the fitted rule, an associated file inside the .tflite
REFER = "REFER"
NO_IMAGES, NO_READABLE_IMAGE = "no-images", "no-readable-image"
TOO_FEW_FIELDS, DISCORDANT = "too-few-fields", "discordant"
MIXED_SHARE = 0.4  # a mixed pseudo-case gives its second class at least this share of fields


@dataclass(frozen=True)
class CaseRule:
    """How the accepted fields of a case become one call.

    The defaults are what `fit_rule` gave for the bundled int8 model on its validation
    split, run with LiteRT (docs/cases.md); a model made by `hemalite convert` carries its
    own fitted rule.

    min_fields       accepted fields a call needs (fewer: REFER too-few-fields);
    max_discordance  mean log-ratio per accepted field (see the module docstring) above
                     which the fields disagree beyond what one class explains: REFER
                     discordant;
    eps              probabilities below this count as this: caps one field's evidence;
    fit              where the numbers come from (split, images, pseudo-cases, objective).
    """

    min_fields: int = 2
    max_discordance: float = 0.7
    eps: float = 1 / 512
    fit: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CaseRule":
        return cls(**json.loads(data))

    def describe(self) -> str:
        return (f"min fields {self.min_fields}, max discordance {self.max_discordance:.2f}")


def stored_rule(files: dict) -> CaseRule | None:
    """The rule a model carries among its associated files (ModelInfo.files), or None."""
    data = files.get(CASE_FILE)
    return CaseRule.from_bytes(data) if data else None


@dataclass
class CaseCall:
    """One case's call and the evidence behind it."""

    label: str  # a class or REFER
    reason: str | None = None  # why REFER (None: the label stands)
    probability: float | None = None  # mean probability of `guess` over the accepted fields
    guess: str | None = None  # the class the accepted fields support best, also for a REFER
    fields: int = 0  # images read
    accepted: int = 0  # fields not referred
    counts: dict = field(default_factory=dict)  # accepted fields per class, by their own label
    referred: dict = field(default_factory=dict)  # referred fields per reason
    failed: int = 0  # image files that could not be read
    discordance: float | None = None
    detail: str = ""  # the numbers behind the reason


def log_evidence(probabilities: np.ndarray, eps: float) -> np.ndarray:
    """log(max(p, eps)): (fields, classes)."""
    return np.log(np.clip(np.asarray(probabilities, np.float64), eps, 1.0))


def case_label(logp: np.ndarray) -> int:
    """The class with the largest summed log-probability (ties: the first)."""
    return int(np.argmax(logp.sum(0)))


TOLERATED_FROM = 5  # from this many accepted fields, the one most discordant is left out


def discordance(logp: np.ndarray, label: int) -> float:
    """Mean over fields of log(p_best / p_label): 0 when every field's best is `label`.
    A case of TOLERATED_FROM or more accepted fields tolerates one outlying field (left out
    of the mean): one misread field in five is what a per-field error of 1-2 % gives, while
    a second class takes two fields or more (40 % of a mixed pseudo-case). Measured with
    the 288-px bundled model on the test split's 5-field pseudo-cases: single-class cases
    referred 5.5 -> see the model card (its Benign errors are confident, 0.97-0.99)."""
    if not len(logp):
        return 0.0
    gaps = np.sort(logp.max(1) - logp[:, label])
    if len(gaps) >= TOLERATED_FROM:
        gaps = gaps[:-1]
    return float(np.mean(gaps))


def _count(names) -> dict:
    return dict(Counter(names).most_common())


def call_case(probabilities, reasons, labels, rule: CaseRule = CaseRule(),
              failed: int = 0) -> CaseCall:
    """The call for one case from its readable fields' assessments.

    `probabilities` (fields, classes) and `reasons` (None for an accepted field) are in
    field order; `failed` counts the image files that could not be read.
    """
    reasons = list(reasons)
    fields = len(reasons)
    probabilities = np.asarray(probabilities, np.float64).reshape(fields, len(labels))
    accepted = np.array([r is None for r in reasons], bool)
    call = CaseCall(REFER, fields=fields, accepted=int(accepted.sum()), failed=failed,
                    counts={name: 0 for name in labels},
                    referred=_count(r for r in reasons if r is not None))
    if not fields:
        call.reason = NO_READABLE_IMAGE if failed else NO_IMAGES
        call.detail = (f"none of {failed} image files could be read" if failed
                       else "no image file in the case folder")
        return call
    for index in probabilities[accepted].argmax(1):
        call.counts[labels[index]] += 1
    if not accepted.any():
        call.reason = "+".join(call.referred)
        call.detail = f"all {fields} fields referred: " + _counts_text(call.referred)
        return call
    logp = log_evidence(probabilities[accepted], rule.eps)
    best = case_label(logp)
    call.guess = labels[best]
    call.probability = float(probabilities[accepted, best].mean())
    call.discordance = discordance(logp, best)
    if call.accepted < rule.min_fields:
        call.reason = TOO_FEW_FIELDS
        call.detail = f"{call.accepted} accepted < {rule.min_fields} fields needed"
    elif call.discordance > rule.max_discordance:
        call.reason = DISCORDANT
        call.detail = (f"discordance {call.discordance:.2f} > {rule.max_discordance:.2f} "
                       f"(" + _counts_text({k: v for k, v in call.counts.items() if v}) + ")")
    else:
        call.label = call.guess
    return call


def _counts_text(counts: dict) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())


# ------------------------------------------------------------------------- pseudo-cases
def mixed_minority(k: int) -> tuple[int, int]:
    """(fewest, most) fields of the second class in a mixed pseudo-case of k fields: at least
    MIXED_SHARE of them and at most half; k = 3 cannot reach 40 %, so 1 of 3; k = 1 has
    none (0, 0)."""
    low, high = math.ceil(MIXED_SHARE * k - 1e-9), k // 2
    return (low, high) if low <= high else (high, high)


def pseudo_cases(y: np.ndarray, k: int, n: int, rng: np.random.Generator,
                 mixed: bool = False) -> list[tuple[np.ndarray, tuple[int, ...]]]:
    """n pseudo-cases of k distinct images: [(image indices, (class, ...))].

    Single-class: the classes take turns (each about n / classes cases), k images of one
    class. Mixed: an ordered pair of two classes drawn uniformly, the second (minority)
    giving m fields (m uniform in mixed_minority(k)), the first (majority) the rest. A class
    with too few images for a case is left out; none possible: [].
    """
    y = np.asarray(y)
    by = {int(c): np.flatnonzero(y == c) for c in np.unique(y)}
    out: list = []
    if not mixed:
        usable = [c for c, idx in by.items() if len(idx) >= k]
        for i in range(n if usable else 0):
            c = usable[i % len(usable)]
            out.append((rng.choice(by[c], k, replace=False), (c,)))
        return out
    low, high = mixed_minority(k)
    pairs = [(a, b) for a in by for b in by
             if a != b and len(by[a]) >= k - low and len(by[b]) >= high]
    for _ in range(n if pairs and high >= 1 else 0):
        a, b = pairs[rng.integers(len(pairs))]
        m = int(rng.integers(low, high + 1))
        idx = np.r_[rng.choice(by[a], k - m, replace=False), rng.choice(by[b], m, replace=False)]
        out.append((idx, (a, b)))
    return out


def evaluate(probabilities: np.ndarray, reasons, y: np.ndarray, labels, rule: CaseRule,
             sizes=(1, 3, 5, 10), n: int = 4000, seed: int = 0) -> dict:
    """The rule on pseudo-cases of each size k drawn from one split's assessed images:
    {k: {single: {cases, referred, reasons, accuracy_accepted, wrong, wrong_calls,
                  referred_per_class},
         mixed: {cases, referred, reasons, accepted_as_majority, accepted_as_minority,
                 accepted_as_other}}}. Shares are of the cases drawn (n per kind and k);
    the majority class gives k - m fields, the minority m (pseudo_cases), m <= k - m."""
    probabilities, y = np.asarray(probabilities), np.asarray(y)
    reasons = list(reasons)
    rng = np.random.default_rng(seed)
    out = {}
    for k in sizes:
        row = {}
        for kind in ("single", "mixed"):
            drawn = pseudo_cases(y, k, n, rng, mixed=kind == "mixed")
            calls = [call_case(probabilities[idx], [reasons[i] for i in idx], labels, rule)
                     for idx, _ in drawn]
            row[kind] = _tally(calls, [classes for _, classes in drawn], labels, kind)
        out[k] = row
    return out


def _tally(calls: list[CaseCall], classes: list[tuple], labels, kind: str) -> dict:
    n = len(calls)
    referred = [c for c in calls if c.label == REFER]
    result = {"cases": n, "referred": len(referred) / n if n else None,
              "reasons": _count(c.reason for c in referred)}
    called = [(c, cls) for c, cls in zip(calls, classes) if c.label != REFER]
    if kind == "single":
        wrong = [f"{labels[cls[0]]} called {c.label}" for c, cls in called
                 if c.label != labels[cls[0]]]
        result["accuracy_accepted"] = 1 - len(wrong) / len(called) if called else None
        result["wrong"] = len(wrong)
        result["wrong_calls"] = _count(wrong)  # 'Benign called Early': n
        result["referred_per_class"] = {
            labels[c]: sum(call.label == REFER for call, cls in zip(calls, classes)
                           if cls[0] == c) / max(1, sum(cls[0] == c for cls in classes))
            for c in sorted({cls[0] for cls in classes})}
    else:
        for name, which in (("majority", 0), ("minority", 1)):
            result[f"accepted_as_{name}"] = (sum(c.label == labels[cls[which]] for c, cls in called)
                                             / n if n else None)
        result["accepted_as_other"] = (sum(c.label not in (labels[cls[0]], labels[cls[1]])
                                           for c, cls in called) / n if n else None)
    return result


# ------------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class CaseFitConfig:
    """How `hemalite convert` fits a rule on the validation split's pseudo-cases.

    target_accuracy  min_fields is the fewest accepted fields whose single-class
                     pseudo-cases are right at least this often among those called;
    sizes            pseudo-case sizes the discordance threshold is fitted on (pooled);
    cases            pseudo-cases of each kind (single-class, mixed) per size;
    max_fields       the largest min_fields tried;
    step             spacing of the discordance thresholds tried;
    seed             the pseudo-cases' random draw.
    """

    target_accuracy: float = 0.995
    sizes: tuple[int, ...] = (3, 5, 10)
    cases: int = 2000
    max_fields: int = 10
    step: float = 0.05
    seed: int = 0


def fit_rule(probabilities: np.ndarray, reasons, y: np.ndarray,
             cfg: CaseFitConfig = CaseFitConfig(), eps: float = CaseRule.eps,
             split: str = "validation") -> CaseRule:
    """Fit a rule on one split's assessed images (never the test split).

    max_discordance: the threshold that minimises (single-class pseudo-cases referred as
    discordant) + (mixed pseudo-cases not referred), summed over cfg.sizes; where several
    thresholds tie, the middle of the first run of them, away from both kinds of cases.
    min_fields: the fewest accepted fields whose single-class pseudo-cases (drawn from
    accepted images only) are right at least cfg.target_accuracy among those not referred
    as discordant.
    """
    probabilities, y = np.asarray(probabilities, np.float64), np.asarray(y)
    reasons = list(reasons)
    accepted = np.array([r is None for r in reasons], bool)
    logp = log_evidence(probabilities, eps)
    rng = np.random.default_rng(cfg.seed)
    grid = np.round(np.arange(cfg.step, 3.0 + cfg.step / 2, cfg.step), 6)
    errors = np.zeros(len(grid))
    drawn = {"single": 0, "mixed": 0}
    for k in cfg.sizes:
        for kind in drawn:
            values = []
            for idx, _ in pseudo_cases(y, k, cfg.cases, rng, mixed=kind == "mixed"):
                own = idx[accepted[idx]]
                if len(own):
                    values.append(discordance(logp[own], case_label(logp[own])))
            drawn[kind] += len(values)
            if values:
                values = np.array(values)[:, None]
                errors += ((values > grid) if kind == "single" else (values <= grid)).mean(0)
    fit = {"split": split, "images": int(len(y)), "accepted": int(accepted.sum()),
           "sizes": list(cfg.sizes), "pseudo_cases": drawn, "mixed_share": MIXED_SHARE,
           "target_accuracy": cfg.target_accuracy, "seed": cfg.seed,
           "objective": "single-class referred as discordant + mixed not referred, "
                        "summed over sizes"}
    if drawn["single"] and drawn["mixed"]:
        max_discordance = _middle_of_first_run(grid, errors)
        fit["objective_value"] = round(float(errors.min()), 6)
    else:
        max_discordance = CaseRule.max_discordance
        fit["max_discordance"] = "default: no single-class or no mixed pseudo-case could be drawn"
    rule = CaseRule(CaseRule.min_fields, max_discordance, eps)
    min_fields, accuracy = _fit_min_fields(probabilities[accepted], y[accepted], rule, cfg, rng)
    if min_fields is None:
        min_fields = cfg.max_fields
        fit["min_fields"] = f"no size up to {cfg.max_fields} reached the target"
    fit["accuracy_at_min_fields"] = accuracy
    return CaseRule(min_fields, float(max_discordance), eps, fit)


def _middle_of_first_run(grid: np.ndarray, errors: np.ndarray) -> float:
    """The middle (to 0.01) of the first run of neighbouring grid values at the minimum."""
    best = np.flatnonzero(errors <= errors.min() + 1e-12)
    end = 0
    while end + 1 < len(best) and best[end + 1] == best[end] + 1:
        end += 1
    return float(np.round((grid[best[0]] + grid[best[end]]) / 2, 2))


def _fit_min_fields(probabilities, y, rule: CaseRule, cfg: CaseFitConfig,
                    rng: np.random.Generator) -> tuple[int | None, float | None]:
    """(the fewest fields reaching the target accuracy, that accuracy)."""
    labels = [str(c) for c in range(probabilities.shape[1])]
    for n in range(1, cfg.max_fields + 1):
        drawn = pseudo_cases(y, n, cfg.cases, rng)
        if not drawn:
            return None, None
        calls = [call_case(probabilities[idx], [None] * n, labels,
                           CaseRule(1, rule.max_discordance, rule.eps)) for idx, _ in drawn]
        called = [(c, cls) for c, (_, cls) in zip(calls, drawn) if c.label != REFER]
        accuracy = (sum(c.label == labels[cls[0]] for c, cls in called) / len(called)
                    if called else 0.0)
        if accuracy >= cfg.target_accuracy:
            return n, round(accuracy, 6)
    return None, None
