"""hemalite sweep's configurations and front (the training itself: tests/test_train.py)."""
from hemalite.benchmarks.sweep import SweepConfig, configurations, pareto


def test_every_size_and_boundary_is_one_run_directory_and_a_teacher_adds_distilled_twins():
    plain = configurations(SweepConfig(data_dir="d", out="o", sizes=(224, 288),
                                       boundaries=("block_2_expand", "Conv1")))
    assert list(plain) == ["size224", "size224_from_Conv1", "size288", "size288_from_Conv1"]
    assert plain["size288_from_Conv1"].out == "o/size288_from_Conv1"
    assert plain["size224"].image_size == 224 and plain["size224"].teacher is None
    taught = configurations(SweepConfig(data_dir="d", out="o", sizes=(224,), teacher="t",
                                        distill=0.3))
    assert list(taught) == ["size224", "size224_distilled"]
    assert taught["size224"].teacher is None
    assert taught["size224"].distill == 0.5  # the default: a plain run's options unchanged
    assert (taught["size224_distilled"].teacher, taught["size224_distilled"].distill) == ("t", 0.3)
    assert taught["size224_distilled"].out == "o/size224_distilled"


def test_the_front_keeps_what_no_other_configuration_beats():
    rows = [{"int8_ms_1t": 6.0, "as_is": 0.98, "shift_mean": 0.97, "shift_worst": 0.92},
            {"int8_ms_1t": 3.7, "as_is": 0.98, "shift_mean": 0.97, "shift_worst": 0.94},
            {"int8_ms_1t": 4.0, "as_is": 0.97, "shift_mean": 0.96, "shift_worst": 0.93}]
    assert pareto(rows) == [False, True, False]  # the second is faster and no worse
