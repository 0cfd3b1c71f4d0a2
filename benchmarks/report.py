"""Benchmark reports: run the measurements over models, write report.json / report.md / plots.

report.json schema (SCHEMA, versioned):
  schema, created, machine{cpu, architecture, cores, os, python, runtime, runtime_version,
  governor, int8_isa{<instruction set>: present} (null: not recorded), emulated (null,
  or e.g. "aarch64 on x86_64 (QEMU_CPU=cortex-a76)": timings are not the device's)},
  data{source, images, labels}, settings{runs, warmup, threads},
  models[]: {variant, path, kind (tflite|keras), bytes, params, size_ratio,
             latency{"<threads>": {runs, mean_ms, std_ms, min_ms, p50_ms, p90_ms, p99_ms,
                                   samples_ms}},
             end_to_end{images, threads, images_per_s, stage_share, stage_ms_per_image},
             start{process_s, in_process_s, peak_rss_mb},
             accuracy{accuracy, macro_f1, auc_ovr_macro, per_class, confusion_matrix, ece},
             vs_float{accuracy_drop_points, top1_agreement, recall_drop_points},
             cases{rule, rule_source, images, referred_images, protocol,
                   sizes{"<k>": {single{cases, referred, reasons, accuracy_accepted, wrong,
                                        wrong_calls, referred_per_class},
                                 mixed{cases, referred, reasons, accepted_as_majority,
                                       accepted_as_minority, accepted_as_other}}}}
             (.tflite only: pseudo-cases drawn from the images; hemalite.benchmarks.cases)
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from hemalite.errors import HemaliteError
from hemalite.files import read_json, write_json, write_text
from hemalite.metrics import classification_metrics

log = logging.getLogger(__name__)
SCHEMA = "hemalite.bench/1"


class ReportError(HemaliteError):
    """A file given as a report that is not a hemalite.bench/1 report.json."""


ORDER = ("keras", "float32", "float16", "dynamic", "int8")


def variant_of(path: str) -> str:
    """The variant named by hemalite's file names (model_int8.tflite, hemalite_int8.tflite)."""
    stem = Path(path).stem
    for v in ORDER[1:]:
        if stem.endswith(v):
            return v
    return "keras" if path.endswith(".keras") else stem


def run_benchmark(models: list[str], x: np.ndarray, y: np.ndarray, files: list[str], labels,
                  threads=(1, 2), runs: int = 50, warmup: int = 5, source: str = "",
                  progress: bool = True, audit: bool = True, other_labs=()) -> dict:
    """Measure every model; the float32 .tflite (else Keras) is the accuracy reference.

    With `audit`, every .tflite is also audited (hemalite.benchmarks.audit): shifts,
    leukocyte ablation and heatmap mass, on the same images.
    """
    from tqdm import tqdm

    from hemalite.benchmarks import measure

    audit_sets = _audit_sets(models, x, y, labels, other_labs) if audit else None
    names = row_names(models)
    models = sorted(models, key=lambda p: ORDER.index(variant_of(p))
                    if variant_of(p) in ORDER else 99)
    rows, probs = [], []
    steps = tqdm(total=len(models), desc="benchmarking", unit="model", disable=not progress)
    for path in models:
        steps.set_postfix_str(names[path])
        row, model_probs = _measure_model(path, x, y, files, labels, threads, runs, warmup,
                                          audit_sets)
        row["variant"] = names[path]
        rows.append(row)
        probs.append(model_probs)
        steps.update()
    steps.close()
    _compare_with_float(models, rows, probs)
    return {"schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": measure.machine_info(),
            "data": {"source": source, "images": int(len(y)), "labels": list(labels)},
            "settings": {"runs": runs, "warmup": warmup, "threads": list(threads)},
            "models": rows}


def _audit_sets(models: list[str], x: np.ndarray, y: np.ndarray, labels,
                other_labs=()) -> dict:
    """The audit's images, made once for every model: shifted copies, out-of-domain
    material (with the healthy class's cells seen closer up), and which classes count as
    malignant."""
    from hemalite.benchmarks import audit, ood
    from hemalite.metadata import read_model_info

    spec = read_model_info(next(m for m in models if m.endswith(".tflite"))).spec
    malignant = tuple(i for i, name in enumerate(labels) if name.lower() != "benign")
    healthy = x[~np.isin(y, malignant)] if len(malignant) < len(labels) else None
    return {"shifted": audit.shifted_sets(x),
            "ood": ood.ood_sets(x, spec, healthy=healthy, other_labs=other_labs),
            "malignant": malignant}


def _measure_model(path: str, x: np.ndarray, y: np.ndarray, files: list[str], labels, threads,
                   runs: int, warmup: int, audit_sets: dict | None) -> tuple[dict, np.ndarray]:
    """(report row, probabilities) of one .keras or .tflite model."""
    from hemalite.benchmarks import audit, cases, measure, ood

    variant = variant_of(path)
    row = {"variant": variant, "path": os.path.basename(path),
           "kind": "keras" if path.endswith(".keras") else "tflite"}
    if row["kind"] == "keras":
        probs, params = measure.keras_file_probabilities(path, x)
        row.update(bytes=os.path.getsize(path), params=params)
    else:
        row.update(measure.size(path))
        row["latency"] = {str(t): measure.invoke_latency(path, t, runs, warmup, x[0])
                          for t in threads}
        row["end_to_end"] = measure.end_to_end(path, files, max(threads))
        row["start"] = measure.cold_start(path, files[0], max(threads))
        probs = measure.tflite_probabilities(path, x, max(threads))
        row["cases"] = cases.evaluate_cases(path, x, y, labels, max(threads))
        if audit_sets is not None:
            row["audit"] = audit.audit_model(path, audit_sets["shifted"], y, max(threads))
            row["domain"] = ood.evaluate_domain(path, x, y, audit_sets["ood"],
                                                audit_sets["malignant"], max(threads))
    row["accuracy"] = classification_metrics(y, probs, labels)
    return row, probs


def row_names(models: list[str]) -> dict[str, str]:
    """Each model's name in the report: its variant, or, where two files share a variant (an
    A/B of two exports or two runs), the variant and the file's path below the folder all
    the models share: 'int8 (old/model_int8.tflite)', 'int8 (runs/A/tflite/model_int8.tflite)'."""
    counts = Counter(variant_of(p) for p in models)
    if max(counts.values(), default=0) < 2:
        return {p: variant_of(p) for p in models}
    top = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in models])
    return {p: variant_of(p) if counts[variant_of(p)] == 1 else
            f"{variant_of(p)} ({os.path.relpath(os.path.abspath(p), top)})" for p in models}


def run_folder(path: str) -> Path:
    """The folder a model belongs to: a run's tflite/ counts as the run (model.keras beside)."""
    parent = Path(os.path.abspath(path)).parent
    return parent.parent if parent.name == "tflite" else parent


def reference_of(path: str, models: list[str]) -> str | None:
    """The model a file's accuracy drop is measured against: the float32 .tflite, else the
    Keras model, of its own run or folder; else the only float32 (else Keras) benchmarked;
    None when there is none, or several and none of them its own."""
    own = [p for p in models if run_folder(p) == run_folder(path)]
    for pool in (own, models):
        for variant in ("float32", "keras"):
            candidates = [p for p in pool if variant_of(p) == variant]
            if len(candidates) == 1 or (candidates and pool is own):
                return candidates[0]
    return None


def _compare_with_float(models: list[str], rows: list[dict], probs: list[np.ndarray]) -> None:
    """Add each row's drop versus its reference (reference_of) and its size ratio to it."""
    from hemalite.benchmarks import measure

    index = {p: i for i, p in enumerate(models)}
    for path, r, p in zip(models, rows, probs):
        ref = reference_of(path, models)
        if ref is None:
            r["size_ratio"] = None
            continue
        ref_row = rows[index[ref]]
        r["vs_float"] = measure.versus_reference(r["accuracy"], p, ref_row["accuracy"],
                                                 probs[index[ref]])
        r["vs_float"]["reference"] = ref_row["variant"]
        r["size_ratio"] = r["bytes"] / ref_row["bytes"] if \
            variant_of(ref) == "float32" and r["kind"] == "tflite" else None


def _fmt(v, spec=".2f", none="-"):
    return none if v is None else format(v, spec)


def headline(report: dict) -> str:
    """One line per variant: size, p50 latency per thread count, accuracy, drop vs float."""
    threads = report["settings"]["threads"]
    head = ["variant", "size (MB)", "x float32"] + [f"p50 ms ({t} thr)" for t in threads] + [
        "images/s e2e", "accuracy", "macro-F1", "drop vs float (pts)", "top-1 agreement"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["models"]:
        lat = r.get("latency", {})
        cells = [r["variant"], _fmt(r["bytes"] / 1e6), _fmt(r.get("size_ratio"), ".3f")]
        cells += [_fmt(lat.get(str(t), {}).get("p50_ms")) for t in threads]
        cells += [_fmt(r.get("end_to_end", {}).get("images_per_s"), ".1f"),
                  _fmt(r["accuracy"]["accuracy"], ".4f"), _fmt(r["accuracy"]["macro_f1"], ".4f"),
                  _fmt(r.get("vs_float", {}).get("accuracy_drop_points")),
                  _fmt(r.get("vs_float", {}).get("top1_agreement"), ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", machine_line(report["machine"])])


def machine_line(m: dict) -> str:
    """Which int8 instruction sets the CPU had (they decide whether int8 beats float32)."""
    isa = m.get("int8_isa")
    text = ("int8 instruction sets: not recorded" if not isa else
            "int8 instruction sets: " + "; ".join(
                f"{', '.join(n for n, ok in isa.items() if ok is want) or 'none'} {word}"
                for want, word in ((True, "present"), (False, "absent"))))
    if m.get("emulated"):
        text = f"**emulated**, {m['emulated']}: timings are not the device's. " + text
    return text + "."


def to_markdown(report: dict, plots: list[str]) -> str:
    """The report a person reads: headline first, then details, machine and plots."""
    m, d, s = report["machine"], report["data"], report["settings"]
    out = [f"# hemalite benchmark: {m['cpu']} ({m['architecture']}, {m['cores']} cores)", "",
           f"{d['images']} images from {d['source']}; latency = median of {s['runs']} timed "
           f"invokes after {s['warmup']} warm-up runs, per thread count. Created "
           f"{report['created']}. Schema `{report['schema']}`.", "", headline(report), ""]
    if m.get("governor") not in (None, "performance"):
        out += [f"> Warning: CPU governor is `{m['governor']}`, not `performance`: latency "
                "may include frequency ramp-up.", ""]
    out += ["## Latency of invoke (ms)", "",
            "| variant | threads | mean | std | min | p50 | p90 | p99 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["models"]:
        for t, lat in r.get("latency", {}).items():
            out.append(f"| {r['variant']} | {t} | " + " | ".join(
                _fmt(lat[k]) for k in ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms",
                                       "p99_ms")) + " |")
    out += ["", "## End to end, memory and start", "",
            "| variant | images/s | decode | preprocess | invoke | postprocess | cold start (s) | peak RSS (MB) | params |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["models"]:
        e, st = r.get("end_to_end"), r.get("start")
        share = (lambda k: f"{100 * e['stage_share'][k]:.0f} %") if e else (lambda k: "-")
        out.append(f"| {r['variant']} | {_fmt(e and e['images_per_s'], '.1f')} | "
                   + " | ".join(share(k) for k in ("decode", "preprocess", "invoke",
                                                   "postprocess"))
                   + f" | {_fmt(st and st['process_s'])} | {_fmt(st and st['peak_rss_mb'], '.0f')}"
                   f" | {r['params']:,} |")
    out += ["", "## Accuracy", "", "| variant | accuracy | macro-F1 | AUC-ROC (OvR) | ECE | "
            + " | ".join(f"recall {c}" for c in d["labels"]) + " |",
            "|---|" + "---:|" * (4 + len(d["labels"]))]
    for r in report["models"]:
        a = r["accuracy"]
        out.append(f"| {r['variant']} | {a['accuracy']:.4f} | {a['macro_f1']:.4f} | "
                   f"{_fmt(a['auc_ovr_macro'], '.4f')} | {a['ece']:.4f} | "
                   + " | ".join(f"{a['per_class'][c]['recall']:.4f}" for c in d["labels"]) + " |")
    out += audit_markdown(report)
    out += faults_markdown(report)
    out += domain_markdown(report)
    out += cases_markdown(report)
    out += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in m.items()]
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    out += ["", "hemalite is a research and screening aid, not a diagnosis."]
    return "\n".join(out) + "\n"


def _section(title: str, intro: str, columns: list[str]) -> list[str]:
    """A report section: heading, one paragraph, a table head (first column left-aligned)."""
    return ["", f"## {title}", "", intro, "", "| " + " | ".join(columns) + " |",
            "|---|" + "---:|" * (len(columns) - 1)]


def audit_markdown(report: dict) -> list[str]:
    """The audit as tables: accuracy per input set and variant, then the heatmap's mass."""
    audited = [r for r in report["models"] if r.get("audit")]
    if not audited:
        return []
    out = _section("Audit: what the model decides from",
                   "Accuracy of the best guess on every image, per input (the images above, "
                   "shifted or ablated; hemalite/shifts.py). In brackets: the share the "
                   "model's own checks refer to a morphologist (no leukocyte, out of domain, "
                   "low confidence).", ["input"] + [r["variant"] for r in audited])
    for name in audited[0]["audit"]:
        cells = []
        for r in audited:
            a = r["audit"][name]
            referred = sum(a["referred"].values()) / a["images"] if a["images"] else 0
            cells.append(f"{100 * a['accuracy']:.1f} % ({100 * referred:.0f} % referred)")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "Heatmap (the predicted class's activation map from the model's `cam` output, "
            "positive part, as `edge-classify --heatmaps` draws it: on a cell-grounded model, "
            "only over the pixels its Ground layer lets through): share of its mass on the "
            "leukocytes (their stain mask) and on the scale-bar corner, next to the share of "
            "the image each covers. The map alone (a cell per 32 px of the backbone's input: "
            "7 x 7 at 224 px, 9 x 9 at 288), upsampled, also covers the grey around each cell "
            "that the model cannot see: its mass is the second column.", "",
            "| variant | mass on leukocytes | map alone | leukocyte area "
            "| mass on annotation | annotation area |",
            "|---|---:|---:|---:|---:|---:|"]
    for r in audited:
        h = r["audit"]["as is"].get("heatmap") or {}
        if h.get("images"):
            raw = h.get("cam_mass_on_leukocytes")
            out.append(f"| {r['variant']} | {h['mass_on_leukocytes']:.3f} | "
                       f"{'-' if raw is None else f'{raw:.3f}'} | "
                       f"{h['leukocyte_area']:.3f} | {h['mass_on_annotation']:.3f} | "
                       f"{h['annotation_area']:.3f} |")
        else:
            out.append(f"| {r['variant']} | - (no cam output) | - | - | - | - |")
    return out


def faults_markdown(report: dict) -> list[str]:
    """Per audit input, the REFERs by reason and how right the accepted rest is; for the
    faults a technician can fix, the share of REFERs that name the expected reason."""
    from hemalite import shifts

    audited = [r for r in report["models"] if r.get("audit")]
    if not audited:
        return []
    expected = {shifts.FAULT_PREFIX + shifts.shift_name(n, v): reason
                for (n, v), reason in shifts.FAULT_SHIFTS.items()}
    out = _section("REFER reasons: what to fix at the microscope",
                   "Per input and variant, at the model's defaults (`edge-classify`: its "
                   "stored floor and checks): the share referred and each reason's count, "
                   "the accuracy on the accepted rest, and for the faults a technician can "
                   "fix (`fault: ...`, hemalite.shifts.FAULT_SHIFTS) the share of the REFERs "
                   "that name the expected reason.",
                   ["input", "variant", "referred", "reasons", "right among the accepted",
                    "REFERs with the expected reason"])
    for name in audited[0]["audit"]:
        for r in audited:
            a = r["audit"][name]
            total = sum(a["referred"].values())
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(a["referred"].items())) or "-"
            want = expected.get(name)
            share = (f"{a['referred'].get(want, 0) / total:.0%} ({want})" if want and total
                     else (f"- ({want})" if want else ""))
            out.append(f"| {name} | {r['variant']} | {total / a['images']:.1%} | {reasons} | "
                       f"{_fmt(a['accuracy_accepted'], '.1%')} | {share} |")
    return out


def domain_markdown(report: dict) -> list[str]:
    """The domain check at the model's operating point: in-domain cost, OOD referrals."""
    checked = [r for r in report["models"] if r.get("domain")]
    if not checked:
        return []
    out = _section("Domain check: what is referred",
                   "At each model's recommended operating point (its stored domain threshold, "
                   "set on the validation split, the feature score's also on training "
                   "images, and its confidence floor, `--min-confidence "
                   "auto`). Accepted as malignant = not referred and called Early, Pre or Pro.",
                   ["variant", "threshold", "floor", "in-domain referred", "accuracy on accepted"]
                   + [f"{k}: referred / accepted as malignant" for k in checked[0]["domain"]["ood"]])
    for r in checked:
        d = r["domain"]
        t = d["test"]
        cells = [f"{100 * o['referred']:.1f} % / {100 * o['accepted_as_malignant']:.1f} %"
                 f" (n={o['images']}; " + ", ".join(
                     f"{k} {v}" for k, v in sorted(o["reasons"].items())) + ")"
                 for o in d["ood"].values()]
        out.append(f"| {r['variant']} | {d['threshold']:.3f} | {d['min_confidence']:.3f} | "
                   f"{100 * t['referred']:.1f} % | {_fmt(t['accuracy_accepted'], '.4f')} | "
                   + " | ".join(cells) + " |")
    return out


def _percent(v, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f} %"


def cases_markdown(report: dict) -> list[str]:
    """The report's cases section: per variant and size, single-class and mixed pseudo-cases."""
    rows = [r for r in report["models"] if r.get("cases")]
    if not rows:
        return []
    first = rows[0]["cases"]["protocol"]
    out = ["", "## Cases: one call per pseudo-case", "",
           "Pseudo-cases, not patients: the dataset has no patient identifiers. Each is k of the "
           "images above, of one class (single-class: the call should be that class) or of two "
           f"classes, the second giving at least {100 * first['mixed_share']:.0f} % of the "
           "fields (1 of 3 at k = 3; mixed: the call should be REFER), "
           f"{first['cases_per_kind']} of each kind per k, images reused across pseudo-cases. "
           "Called by each model's case rule (hemalite.cases) from the per-image decisions at "
           "its operating point. One patient's fields share a slide and a stain: real cases "
           "are less independent than these.", ""]
    for r in rows:
        c = r["cases"]
        rule = c["rule"]
        out.append(f"- {r['variant']}: min fields {rule['min_fields']}, max discordance "
                   f"{rule['max_discordance']:.2f} ({c['rule_source']}); "
                   f"{c['referred_images']} of {c['images']} images referred one by one")
    out += ["", "| variant | k | single-class: right among called | single-class referred "
            "(reasons) | mixed referred | mixed called as majority / minority class |",
            "|---|---:|---:|---|---:|---:|"]
    for r in rows:
        for k, v in sorted(r["cases"]["sizes"].items(), key=lambda item: int(item[0])):
            s, m = v["single"], v["mixed"]  # report.json keeps keys sorted: order them here
            why = ", ".join(f"{name} {count}" for name, count in
                            sorted(s["reasons"].items(), key=lambda item: -item[1]))
            right = _percent(s["accuracy_accepted"], 2)
            if s["accuracy_accepted"] is not None:
                right += f" ({s['wrong']} wrong" + "".join(
                    f"; {what} {n}" for what, n in s.get("wrong_calls", {}).items()) + ")"
            mixed = "-" if not m["cases"] else " / ".join(
                _percent(m[f"accepted_as_{which}"]) for which in ("majority", "minority"))
            per_class = ", ".join(f"{name} {_percent(share)}" for name, share in
                                  s.get("referred_per_class", {}).items())
            out.append(f"| {r['variant']} | {k} | {right} | {_percent(s['referred'])}"
                       + (f" ({why})" if why else "")
                       + (f"; per class: {per_class}" if why and per_class else "")
                       + f" | {_percent(m['referred'])} | {mixed} |")
    return out


def write_report(report: dict, out: str | os.PathLike) -> list[Path]:
    """report.json, report.md and (when matplotlib is importable) PNG plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from hemalite.benchmarks import figures
        made = figures.all_plots(report, out)
    except ImportError:
        log.warning("matplotlib not installed: report written without plots")
        made = []
    write_json(out / "report.json", report)
    write_text(out / "report.md", to_markdown(report, [str(p) for p in made]))
    return [out / "report.json", out / "report.md", *made]


def load_report(path: str | os.PathLike) -> dict:
    """A report.json, checked; ReportError naming the file when it is not one."""
    try:
        report = read_json(path)
    except ValueError as err:  # not JSON, or not text at all
        raise ReportError(f"{path}: not a JSON file ({err})") from None
    schema = report.get("schema") if isinstance(report, dict) else None
    if schema != SCHEMA:
        raise ReportError(f"{path}: not a {SCHEMA} report (schema {schema!r})")
    return report


def merge(reports: list[dict]) -> str:
    """One Markdown comparison across machines: a row per machine and variant."""
    threads = sorted({t for r in reports for t in r["settings"]["threads"]})
    head = ["machine", "variant", "images", "size (MB)"] + [
        f"p50 ms ({t} thr)" for t in threads] + [
        "images/s e2e", "peak RSS (MB)", "accuracy", "drop vs float (pts)"]
    lines = ["# hemalite benchmarks across machines", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for rep in reports:
        m = rep["machine"]
        name = f"{m['cpu']} ({m['architecture']}, {m['cores']} cores)" + (
            ", emulated" if m.get("emulated") else "")
        for r in rep["models"]:
            lat = r.get("latency", {})
            cells = [name, r["variant"], str(rep["data"]["images"]), _fmt(r["bytes"] / 1e6)]
            cells += [_fmt(lat.get(str(t), {}).get("p50_ms")) for t in threads]
            cells += [_fmt(r.get("end_to_end", {}).get("images_per_s"), ".1f"),
                      _fmt(r.get("start", {}).get("peak_rss_mb"), ".0f"),
                      _fmt(r["accuracy"]["accuracy"], ".4f"),
                      _fmt(r.get("vs_float", {}).get("accuracy_drop_points"))]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "images: how many images each machine's accuracy was measured on (see each "
              "report's data source).", "",
              "Sources: " + "; ".join(f"{r['machine']['hostname']} at {r['created']}"
                                      for r in reports)]
    return "\n".join(lines) + "\n"
