"""Benchmarks on tiny real models: the report's schema and every figure checked for sense."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hemalite.benchmarks import measure
from hemalite.cli import main
from hemalite.benchmarks.report import machine_line
from hemalite.metrics import classification_metrics, expected_calibration_error
from tests.helpers import TINY_INT8, cli_defaults_differing, make_dataset

REPO = Path(__file__).resolve().parents[1]


def test_latency_summary_is_ordered_and_in_ms():
    s = measure.summarise([0.001, 0.002, 0.003, 0.004, 0.010])
    assert s["min_ms"] == pytest.approx(1.0) and s["p50_ms"] == pytest.approx(3.0)
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= 10.0
    assert s["mean_ms"] == pytest.approx(4.0)


XEON = "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx_vnni amx_tile amx_int8\n"
PI4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
PI5 = "Features\t: fp asimd evtstrm aes pmull crc32 atomics asimdrdm lrcpc dcpop asimddp\n"


def test_int8_instruction_sets_are_read_from_cpuinfo():
    assert measure.int8_isa("x86_64", measure.cpu_flags(XEON)) == {
        "avx2": True, "avx_vnni": True, "avx512_vnni": True, "amx_int8": True}
    assert measure.int8_isa("x86_64", {"sse2", "avx2"}) == {
        "avx2": True, "avx_vnni": False, "avx512_vnni": False, "amx_int8": False}
    assert measure.int8_isa("aarch64", measure.cpu_flags(PI4)) == {"asimddp": False,
                                                                   "i8mm": False}
    assert measure.int8_isa("aarch64", measure.cpu_flags(PI5))["asimddp"] is True
    assert measure.int8_isa("riscv64", {"v"}) is None and measure.int8_isa("x86_64", set()) is None
    kinds = [measure.machine_kind({"architecture": a, "int8_isa": measure.int8_isa(a, f)})
             for a, f in (("x86_64", {"avx2"}), ("x86_64", measure.cpu_flags(XEON)),
                          ("aarch64", measure.cpu_flags(PI4)), ("aarch64", measure.cpu_flags(PI5)))]
    assert kinds == ["x86_64-avx2", "x86_64-amx_int8", "aarch64", "aarch64-asimddp"]


def test_emulation_is_told_by_the_kernels_architecture(tmp_path, monkeypatch):
    arch = tmp_path / "arch"
    arch.write_text("x86_64\n")
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    assert measure.emulation("aarch64", str(arch)) == "aarch64 on x86_64 (QEMU_CPU=cortex-a72)"
    assert measure.emulation("x86_64", str(arch)) is None
    arch.write_text("aarch64\n")
    assert measure.emulation("armv7l", str(arch)) is None  # 32-bit Pi OS on its 64-bit kernel
    assert measure.emulation("aarch64", str(tmp_path / "missing")) is None


def test_headline_names_the_instruction_sets_and_emulation():
    isa = {"asimddp": True, "i8mm": False}
    assert machine_line({"int8_isa": isa}) == (
        "int8 instruction sets: asimddp present; i8mm absent.")
    line = machine_line({"int8_isa": isa, "emulated": "aarch64 on x86_64 (QEMU_CPU=cortex-a76)"})
    assert line.startswith("**emulated**, aarch64 on x86_64") and "asimddp present" in line
    assert machine_line({}) == "int8 instruction sets: not recorded."


def test_cold_start_works_from_a_checkout_with_relative_paths(tmp_path, monkeypatch):
    """Run from the repository root: its hemalite/ folder must not shadow the install."""
    image = make_dataset(tmp_path / "data", per_class=1) / "red" / "img_000.png"
    monkeypatch.chdir(REPO)
    result = measure.cold_start(str(TINY_INT8.relative_to(REPO)), str(image), 1)
    assert result["label"] == "red" and result["peak_rss_mb"] > 10


def test_metrics_match_counts_done_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.9 + 0.1 / 3
    m = classification_metrics(y, probs, ("a", "b", "c"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    confident = np.eye(3)[y]
    assert expected_calibration_error(y, confident) == pytest.approx(0.0)


@pytest.fixture(scope="module")
def report(tiny_run, tiny_tflite, tmp_path_factory):  # tiny_tflite: the run's tflite/ made
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(main, ["bench", str(tiny_run), "--out", str(out), "--runs", "20",
                                       "--warmup", "2", "--threads", "1,2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "| int8 |" in result.output
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.tensorflow
def test_report_schema_and_files(report):
    out, rep = report
    assert rep["schema"] == "hemalite.bench/1"
    assert {"cpu", "architecture", "cores", "os", "python", "runtime", "governor"} <= \
        set(rep["machine"])
    assert [m["variant"] for m in rep["models"]] == ["keras", "float32", "float16", "dynamic",
                                                      "int8"]
    for name in ("report.md", "confusion_float_vs_int8.png", "latency.png", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    assert md.index("| variant | size (MB)") < md.index("## Latency")  # headline first
    config = json.loads((out / "bench_config.json").read_text())
    assert config["runs"] == 20 and config["threads"] == [1, 2] and config["keras_too"]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_report_figures_are_sane(report, tiny_run, tiny_tflite):
    _, rep = report
    from hemalite.edge.runtime import load_model
    from hemalite.train import data

    labels = data.read_labels(tiny_run / "labels.txt")
    samples = data.read_manifest(tiny_run / "splits" / "test.csv", labels)
    root = json.loads((tiny_run / "config.json").read_text())["data_dir"]
    for m in rep["models"]:
        assert m["accuracy"]["n"] == len(samples)
        if m["kind"] != "tflite":
            continue
        path = tiny_tflite[m["variant"]]
        assert m["bytes"] == os.path.getsize(path) and m["params"] > 10_000
        for lat in m["latency"].values():
            assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
            assert lat["runs"] == 20 and len(lat["samples_ms"]) == 20
        e2e = m["end_to_end"]
        assert e2e["images"] == len(samples) and e2e["images_per_s"] > 0
        assert sum(e2e["stage_share"].values()) == pytest.approx(1.0, abs=0.05)
        assert m["start"]["peak_rss_mb"] > 10 and m["start"]["process_s"] > 0
        # accuracy recounted here, image by image, through the edge runtime
        model = load_model(path)
        correct = 0
        for s in samples:
            from hemalite.contract import load_image, preprocess
            pixels = preprocess(load_image(Path(root, s.path), model.info.spec), model.info.spec)
            correct += int(model.predict(pixels).argmax() == s.label)
        assert m["accuracy"]["accuracy"] == pytest.approx(correct / len(samples))
    by = {m["variant"]: m for m in rep["models"]}
    assert by["float32"]["size_ratio"] == 1.0 and by["int8"]["size_ratio"] < 0.4
    assert by["float32"]["vs_float"]["accuracy_drop_points"] == 0.0
    assert by["int8"]["vs_float"]["accuracy_drop_points"] == pytest.approx(
        100 * (by["float32"]["accuracy"]["accuracy"] - by["int8"]["accuracy"]["accuracy"]))


@pytest.mark.slow
@pytest.mark.tensorflow
def test_merge_two_reports(report, tmp_path):
    out, rep = report
    other = dict(rep, machine=dict(rep["machine"], cpu="Raspberry Pi 5", architecture="aarch64"))
    (tmp_path / "pi.json").write_text(json.dumps(other))
    result = CliRunner().invoke(main, ["report", "merge", str(out / "report.json"),
                                       str(tmp_path / "pi.json"), "--out", str(tmp_path / "m.md")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "m.md").read_text()
    assert table.count("| Raspberry Pi 5 (aarch64") == len(rep["models"])
    assert table.count(f"| {rep['machine']['cpu']}") == len(rep["models"])
    assert "| machine | variant | images |" in table
    assert f"| int8 | {rep['data']['images']} |" in table
    (tmp_path / "bad.json").write_text("{}")
    bad = CliRunner().invoke(main, ["report", "merge", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "not a hemalite.bench/1 report" in bad.output
    (tmp_path / "notes.md").write_text("# not JSON")
    bad = CliRunner().invoke(main, ["report", "merge", str(tmp_path / "notes.md")])
    assert bad.exit_code == 2 and f"{tmp_path / 'notes.md'}: not a JSON file" in bad.output


@pytest.mark.slow
@pytest.mark.tensorflow
def test_confusion_plot_is_named_for_what_it_shows(report, tmp_path):
    from hemalite.benchmarks import figures

    _, rep = report
    only_int8 = dict(rep, models=[m for m in rep["models"] if m["variant"] == "int8"])
    made = figures.all_plots(only_int8, tmp_path)
    assert "confusion_int8.png" in [p.name for p in made]


def test_edge_bench_runs_without_tensorflow(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=4)
    code = f"""
import sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
sys.modules["keras"] = None
from hemalite.benchmarks.cli import edge_bench_command
edge_bench_command([{str(TINY_INT8)!r}, {str(TINY_INT8.with_name('tiny_float32.tflite'))!r},
    "--data", {str(data)!r}, "--out", {str(tmp_path / 'out')!r}, "--runs", "5",
    "--warmup", "1", "--no-progress"])
"""
    # run away from the checkout, whose hemalite/ folder would shadow a non-editable install
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [m["variant"] for m in rep["models"]] == ["float32", "int8"]
    assert rep["data"]["images"] == 12 and rep["models"][1]["accuracy"]["accuracy"] == 1.0
    assert "| int8 |" in proc.stdout and "int8 instruction sets:" in proc.stdout


def test_an_a_b_of_two_runs_names_each_file_and_compares_within_its_run(tmp_path):
    from hemalite.benchmarks.cli import edge_bench_command

    data = make_dataset(tmp_path / "data", per_class=3)
    tiny_float32 = TINY_INT8.with_name("tiny_float32.tflite")
    for run, float_file in (("old", tiny_float32), ("new", TINY_INT8)):
        (tmp_path / run / "tflite").mkdir(parents=True)  # new: its "float32" is the int8 file
        shutil.copy(float_file, tmp_path / run / "tflite" / "model_float32.tflite")
        shutil.copy(TINY_INT8, tmp_path / run / "tflite" / "model_int8.tflite")
    models = [str(tmp_path / r / "tflite" / f"model_{v}.tflite") for r in ("old", "new")
              for v in ("float32", "int8")]
    result = CliRunner().invoke(edge_bench_command, [*models, "--data", str(data), "--out",
                                str(tmp_path / "out"), "--runs", "3", "--warmup", "1",
                                "--no-audit", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = {m["variant"]: m for m in
            json.loads((tmp_path / "out" / "report.json").read_text())["models"]}
    assert sorted(rows) == [f"{v} ({r}/tflite/model_{v}.tflite)" for v in ("float32", "int8")
                            for r in ("new", "old")]
    old = rows["int8 (old/tflite/model_int8.tflite)"]
    new = rows["int8 (new/tflite/model_int8.tflite)"]
    assert old["vs_float"]["reference"] == "float32 (old/tflite/model_float32.tflite)"
    assert new["vs_float"]["reference"] == "float32 (new/tflite/model_float32.tflite)"
    assert new["size_ratio"] == 1.0 and old["size_ratio"] < 0.9
    report_md = (tmp_path / "out" / "report.md").read_text()
    assert "| int8 (old/tflite/model_int8.tflite) |" in report_md
    assert (tmp_path / "out" / "confusion_float_vs_int8.png").is_file()  # all four in it


def test_the_reference_is_the_float32_of_the_same_run_else_the_only_one():
    from hemalite.benchmarks.report import reference_of

    run = ["r/model.keras", "r/tflite/model_float32.tflite", "r/tflite/model_int8.tflite"]
    assert [reference_of(p, run) for p in run] == [run[1]] * 3  # keras too: not itself
    assert reference_of("a/x_int8.tflite", ["a/x_int8.tflite", "b/y_float32.tflite"]) == \
        "b/y_float32.tflite"  # the only float32 benchmarked
    two = ["a/model_int8.tflite", "b/model_float32.tflite", "c/model_float32.tflite"]
    assert reference_of(two[0], two) is None  # which float32? neither is its own
    assert reference_of(run[2], run[2:]) is None  # nothing to compare with


def test_bench_measures_images_in_nested_class_folders(tiny_int8, tmp_path):
    from hemalite.benchmarks.inputs import load_images
    from tests.helpers import make_dataset, nest

    data = nest(make_dataset(tmp_path / "data", per_class=6, size=40))
    models = [str(tiny_int8)]
    x, y, files, labels, _ = load_images(models, str(data), None, None, 0)
    assert len(x) == len(files) == 18
    assert [labels[i] for i in y] == [Path(f).relative_to(data).parts[0] for f in files]
    manifest = tmp_path / "test.csv"  # what `hemalite bench RUN` reads: splits/test.csv
    rows = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    manifest.write_text("path,label\n" + "".join(f"{r},{r.split('/')[0]}\n" for r in rows))
    x, y, files, _, _ = load_images(models, None, str(manifest), str(data), 0)
    assert len(x) == 18 and np.bincount(y).tolist() == [6, 6, 6]


def test_bench_says_when_images_have_no_class_folder(tiny_int8, tmp_path, capsys):
    from hemalite.benchmarks.inputs import load_images
    from tests.helpers import make_dataset

    data = make_dataset(tmp_path / "data", per_class=2, size=40)
    (data / "loose.png").write_bytes((data / "red" / "img_000.png").read_bytes())
    x, _, _, _, _ = load_images([str(tiny_int8)], str(data), None, None, 0)
    assert len(x) == 6
    assert "1 of 7 images are not under a folder named after a label" in capsys.readouterr().err


@pytest.mark.parametrize("args, option", [
    (["--threads", "abc"], "--threads"), (["--threads", "1,x"], "--threads"),
    (["--threads", "0"], "--threads"), (["--runs", "0"], "--runs"),
    (["--warmup", "-1"], "--warmup")])
def test_edge_bench_refuses_bad_numbers_with_the_option_name(tiny_int8, tmp_path, args,
                                                            option):
    from hemalite.benchmarks.cli import edge_bench_command
    from tests.helpers import make_dataset

    data = make_dataset(tmp_path / "data", per_class=2, size=40)
    result = CliRunner().invoke(edge_bench_command, [
        str(tiny_int8), "--data", str(data), "--out", str(tmp_path / "out"),
        "--no-progress", *args])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output


def test_bench_options_default_to_the_config():
    from hemalite.benchmarks.cli import BenchConfig, edge_bench_command

    differing = cli_defaults_differing(edge_bench_command, BenchConfig, skip=("threads",))
    assert differing == {}
    threads = next(p for p in edge_bench_command.params if p.name == "threads")
    assert threads.type.convert(threads.default, None, None) == BenchConfig.threads
