"""One call per case (hemalite.cases): the rule on arrays, on real pseudo-cases through the
bundled model, and `edge-classify --cases` end to end on real smear images."""
from __future__ import annotations

import numpy as np
import pytest

from hemalite import cases

LABELS = ("Benign", "Early", "Pre", "Pro")


def fields(*rows) -> np.ndarray:
    return np.array(rows, float)


SURE_EARLY = (0.0, 0.996, 0.004, 0.0)
SURE_BENIGN = (0.996, 0.004, 0.0, 0.0)


def test_agreeing_fields_are_called_with_their_mean_probability():
    call = cases.call_case(fields(SURE_EARLY, SURE_EARLY, (0.02, 0.9, 0.08, 0.0)),
                           [None] * 3, LABELS)
    assert (call.label, call.reason, call.guess) == ("Early", None, "Early")
    assert call.probability == pytest.approx((0.996 * 2 + 0.9) / 3)
    assert call.counts == {"Benign": 0, "Early": 3, "Pre": 0, "Pro": 0}
    assert call.discordance == pytest.approx(0.0) and call.fields == call.accepted == 3


def test_one_hesitant_dissent_is_explained_but_confident_fields_of_two_classes_are_not():
    hesitant = (0.355, 0.645, 0.0, 0.0)  # a Benign field called Early, just above the floor
    call = cases.call_case(fields(*[SURE_BENIGN] * 4, hesitant), [None] * 5, LABELS)
    assert call.label == "Benign" and call.counts["Early"] == 1
    assert call.discordance == pytest.approx(np.log(0.645 / 0.355) / 5)
    mixed = cases.call_case(fields(*[SURE_EARLY] * 3, *[SURE_BENIGN] * 2), [None] * 5, LABELS)
    assert (mixed.label, mixed.reason, mixed.guess) == (cases.REFER, cases.DISCORDANT, "Early")
    assert "Benign 2, Early 3" in mixed.detail
    # Benign beside Pro-B, each field sure of itself: one such field in five is enough
    pro = (0.0, 0.0, 0.0, 0.996)
    assert cases.call_case(fields(*[pro] * 4, SURE_BENIGN), [None] * 5, LABELS).reason == \
        cases.DISCORDANT


def test_the_case_label_is_the_class_that_leaves_the_least_unexplained():
    rng = np.random.default_rng(0)
    for _ in range(200):
        logp = cases.log_evidence(rng.dirichlet(np.full(4, 0.3), size=rng.integers(1, 8)),
                                  cases.CaseRule.eps)
        label = cases.case_label(logp)
        assert all(cases.discordance(logp, label) <= cases.discordance(logp, c) + 1e-12
                   for c in range(4))


def test_referred_fields_carry_no_evidence_and_their_reasons_stand_when_all_are_referred():
    probs = fields(SURE_BENIGN, SURE_EARLY, SURE_EARLY)
    call = cases.call_case(probs, ["out-of-domain", None, None], LABELS)
    assert call.label == "Early" and call.accepted == 2 and call.referred == {"out-of-domain": 1}
    few = cases.call_case(probs, ["out-of-domain", "low-confidence", None], LABELS)
    assert (few.label, few.reason, few.guess) == (cases.REFER, cases.TOO_FEW_FIELDS, "Early")
    every = cases.call_case(probs, ["out-of-domain", "low-confidence", "out-of-domain"], LABELS)
    assert every.reason == "out-of-domain+low-confidence" and every.guess is None
    assert "all 3 fields referred: out-of-domain 2, low-confidence 1" == every.detail
    loose = cases.CaseRule(min_fields=1)
    assert cases.call_case(probs[1:2], [None], LABELS, loose).label == "Early"


def test_a_case_with_no_image_or_no_readable_image_is_referred_with_that_reason():
    empty = cases.call_case(np.zeros((0, 4)), [], LABELS)
    assert (empty.label, empty.reason, empty.fields) == (cases.REFER, cases.NO_IMAGES, 0)
    unread = cases.call_case(np.zeros((0, 4)), [], LABELS, failed=2)
    assert unread.reason == cases.NO_READABLE_IMAGE and "2 image files" in unread.detail


def test_pseudo_cases_follow_the_stated_protocol():
    y = np.repeat([0, 1, 2, 3], [40, 78, 77, 3])  # the last class too small for 5 fields
    rng = np.random.default_rng(0)
    single = cases.pseudo_cases(y, 5, 300, rng)
    assert len(single) == 300 and {c for _, (c,) in single} == {0, 1, 2}
    assert all(len(set(idx)) == 5 and set(y[idx]) == {c} for idx, (c,) in single)
    for k, (low, high) in ((3, (1, 1)), (5, (2, 2)), (10, (4, 5))):
        assert cases.mixed_minority(k) == (low, high)
        for idx, (a, b) in cases.pseudo_cases(y, k, 200, rng, mixed=True):
            assert len(set(idx)) == k and a != b and set(y[idx]) == {a, b}
            assert low <= (y[idx] == b).sum() <= high
    assert cases.pseudo_cases(y, 1, 10, rng, mixed=True) == []


def test_the_rule_travels_as_bytes_and_is_found_among_a_models_files():
    rule = cases.CaseRule(3, 0.85, fit={"split": "validation"})
    assert cases.CaseRule.from_bytes(rule.to_bytes()) == rule
    assert cases.stored_rule({cases.CASE_FILE: rule.to_bytes()}) == rule
    assert cases.stored_rule({"domain.json": b"{}"}) is None


def test_fitting_refers_mixtures_and_keeps_single_class_cases_on_made_up_fields():
    """Four classes, fields right 97 % of the time, wrong ones hesitant: the fitted threshold
    separates one class from two, and one field alone is not enough at 99.5 %."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 60)
    probs = np.full((len(y), 4), 0.002)
    wrong = rng.random(len(y)) < 0.03
    for i, c in enumerate(y):
        other = (c + 1) % 4
        probs[i, c], probs[i, other] = (0.35, 0.644) if wrong[i] else (0.994, 0.0)
    reasons = [None] * len(y)
    rule = cases.fit_rule(probs, reasons, y)
    assert rule.min_fields == 2 and 0.2 < rule.max_discordance < 1.5
    assert rule.fit["split"] == "validation" and rule.fit["pseudo_cases"]["mixed"] == 6000
    assert rule == cases.fit_rule(probs, reasons, y)  # seeded
    result = cases.evaluate(probs, reasons, y, LABELS, rule, sizes=(5,), n=2000)[5]
    assert result["single"]["referred"] < 0.03 and result["mixed"]["referred"] > 0.9


@pytest.mark.slow
@pytest.mark.tensorflow
def test_convert_stores_a_case_rule_fitted_on_the_validation_split(tiny_run, tiny_tflite):
    from hemalite.edge.runtime import load_model
    from hemalite.train import data

    labels = data.read_labels(tiny_run / "labels.txt")
    validation = data.read_manifest(tiny_run / "splits" / "val.csv", labels)
    for path in tiny_tflite.values():
        rule = cases.stored_rule(load_model(path).info.files)
        assert rule is not None, path
        assert rule.fit["split"] == "validation" and rule.fit["images"] == len(validation)
        assert rule.min_fields >= 1 and rule.max_discordance > 0
