"""`edge-classify --cases`: a folder's sub-folders are cases; one call per case, its rows,
its table and its Markdown report.

Each immediate sub-folder of a folder given is one case (a patient), its images at any depth
below it. The fields are classified one by one by classify() as without --cases (the same
decision, the same per-image rows); hemalite.cases.call_case aggregates their assessments
into the call. Nothing here decides a field.
"""
from __future__ import annotations

import csv
import dataclasses
import html
import json
import os
from collections import Counter
from dataclasses import dataclass, field

from hemalite import DISCLAIMER, cases
from hemalite.edge.classify import Result, _open_output


@dataclass
class CaseGroup:
    """The inputs of one case, in classify order; `name` None: images outside any case."""

    folder: str | None  # the folder given
    name: str | None  # the case: its sub-folder's path relative to `folder`
    inputs: list = field(default_factory=list)  # (path, root) as sources.find_images gives


def case_name(path: str, root: str | None) -> str | None:
    """The immediate sub-folder of `root` an image sits in (at any depth), or None."""
    if root is None:
        return None
    parts = os.path.relpath(path, root).split(os.sep)
    return parts[0] if len(parts) > 1 else None


def subfolders(folder: str) -> list[str]:
    """The immediate sub-folders of `folder`, sorted as the image search walks them."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except OSError:
        return []


def group_cases(inputs: list[tuple[str, str | None]], folders: list[str]) -> list[CaseGroup]:
    """The inputs grouped, in the order they are found (a case's images come together: the
    search walks one sub-folder at a time), with every sub-folder of the folders given that
    holds no image as an empty case in its sorted place."""
    ordered: list[CaseGroup] = []
    for path, root in inputs:
        name = case_name(path, root)
        if not ordered or (ordered[-1].folder, ordered[-1].name) != (root, name):
            ordered.append(CaseGroup(root, name))
        ordered[-1].inputs.append((path, root))
    for folder in dict.fromkeys(folders):
        present = {g.name for g in ordered if g.folder == folder}
        for name in (n for n in subfolders(folder) if n not in present):
            mine = [i for i, g in enumerate(ordered) if g.folder == folder]
            before = [i for i in mine if ordered[i].name is None or ordered[i].name < name]
            at = before[-1] + 1 if before else mine[0] if mine else len(ordered)
            ordered.insert(at, CaseGroup(folder, name))
    return ordered


def case_rule(model, min_fields: int | None = None,
              max_discordance: float | None = None) -> tuple[cases.CaseRule, str, str | None]:
    """(the rule, how it was set, a note or None): the model's stored rule, overridden by the
    numbers given (edge-classify's --case-min-fields / --case-max-discordance); a model
    without one gets hemalite.cases.CaseRule's documented defaults, and the note says so.
    Every face that calls cases (edge-classify --cases, hemalite serve) resolves it here."""
    stored = cases.stored_rule(model.info.files)
    base = stored or cases.CaseRule()
    rule = dataclasses.replace(
        base, min_fields=base.min_fields if min_fields is None else min_fields,
        max_discordance=base.max_discordance if max_discordance is None else max_discordance)
    flags = min_fields is not None or max_discordance is not None
    note = None
    if stored is None and (min_fields is None or max_discordance is None):
        note = (f"note: {os.path.basename(model.path)} carries no case rule; using the "
                f"defaults ({base.describe()}, docs/cases.md) where no --case-min-fields / "
                "--case-max-discordance is given")
    source = ("stored in the model" if stored else "defaults, the model stores none") + (
        ", flags given" if flags else "")
    return rule, f"{rule.describe()} ({source})", note


def call_group(results: list[Result], labels, rule: cases.CaseRule) -> cases.CaseCall:
    """The case call from its fields' Results (classify's decisions, not re-made)."""
    readable = [r for r in results if not r.error]
    return cases.call_case([r.probabilities for r in readable], [r.reason for r in readable],
                           labels, rule, failed=len(results) - len(readable))


def case_truth(results: list[Result]) -> str | None:
    """The ground truth every readable field shares (its class folder), else None."""
    truths = {r.truth for r in results if not r.error}
    return truths.pop() if len(truths) == 1 else None


def case_row(group: CaseGroup, call: cases.CaseCall, labels, truth: str | None) -> dict:
    """One case's row, as --case-csv and --case-jsonl write it."""
    row = {"case": group.name, "label": call.label, "reason": call.reason or "",
           "probability": None if call.probability is None else round(call.probability, 4),
           "fields": call.fields, "accepted": call.accepted}
    row.update({f"accepted_{name}": call.counts.get(name, 0) for name in labels})
    row.update({"guess": call.guess or "", "discordance": None if call.discordance is None
                else round(call.discordance, 4), "referred": call.fields - call.accepted,
                "failed": call.failed, "truth": truth or "", "detail": call.detail,
                "folder": group.folder})
    return row


class CaseWriter:
    """--case-csv / --case-jsonl: one row per case, flushed as each case is called."""

    def __init__(self, labels, csv_path: str | None = None, jsonl_path: str | None = None):
        self._columns = (["case", "label", "reason", "probability", "fields", "accepted"]
                         + [f"accepted_{name}" for name in labels]
                         + ["guess", "discordance", "referred", "failed", "truth", "detail",
                            "folder"])
        self._csv = self._jsonl = None
        if csv_path:
            self._csv = _open_output(csv_path, newline="")
            self._writer = csv.DictWriter(self._csv, self._columns)
            self._writer.writeheader()
        if jsonl_path:
            self._jsonl = _open_output(jsonl_path)

    def write(self, row: dict) -> None:
        if self._csv:
            self._writer.writerow({k: "" if row[k] is None else row[k] for k in self._columns})
            self._csv.flush()
        if self._jsonl:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()

    def close(self) -> None:
        for fh in (self._csv, self._jsonl):
            if fh:
                fh.close()


def case_table(rows: list[dict], labels, rule_text: str) -> str:
    """The console's case table: a line per case, then the counts (and, where every field of
    a case sits under one class folder, the case accuracy)."""
    if not rows:
        return "cases: none (no sub-folder in the folders given)"
    head = ["case", "label", "prob", "fields", "accepted", *labels, "reason"]
    body = [[r["case"], r["label"], "-" if r["probability"] is None else f"{r['probability']:.3f}",
             str(r["fields"]), str(r["accepted"]), *(str(r[f"accepted_{n}"]) for n in labels),
             (r["reason"] + (f": {r['detail']}" if r["reason"] else ""))] for r in rows]
    widths = [max(len(x) for x in column) for column in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells[:-1], widths)) + "  " + cells[-1]
    lines = [f"cases (one call per case from its accepted fields; rule: {rule_text}):",
             fmt(head).rstrip()] + [fmt(b).rstrip() for b in body]
    called = Counter(r["label"] for r in rows if r["label"] != cases.REFER)
    why = Counter(r["reason"] for r in rows if r["label"] == cases.REFER)
    lines.append(f"{len(rows)} cases: {sum(called.values())} called"
                 + (f" ({_counts(sorted(called.items()))})" if called else "")
                 + f", {sum(why.values())} REFER"
                 + (f" ({_counts(why.most_common())})" if why else ""))
    truthful = [r for r in rows if r["truth"] and r["label"] != cases.REFER]
    if truthful:
        right = sum(r["label"] == r["truth"] for r in truthful)
        lines.append(f"case accuracy {right / len(truthful):.4f} on {len(truthful)} called cases "
                     "whose fields all sit under one class folder (REFER excluded)")
    return "\n".join(lines)


def _counts(pairs) -> str:
    return ", ".join(f"{name} {n}" for name, n in pairs)


# ---------------------------------------------------------------------------- the report
def report_folder(root: str, group: CaseGroup, taken: set[str]) -> str:
    """A folder of its own for each case's report and panels (unique, filesystem-safe)."""
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in group.name or "case")
    base = base.lstrip(".") or "case"
    name, n = base, 1
    while name in taken:
        name, n = f"{base}.{n}", n + 1
    taken.add(name)
    return os.path.join(root, name)


def thumbnail(path: str, spec, folder: str, stem: str) -> str | None:
    """A field's image at the model's input size (for models without heatmaps); None when it
    cannot be read."""
    from PIL import Image

    from hemalite.contract import ImageError, load_image, preprocess

    try:
        pixels = preprocess(load_image(path, spec), spec)
    except (ImageError, OSError):
        return None
    out = os.path.join(folder, f"{stem}.png")
    Image.fromarray(pixels).save(out)
    return out


def write_case_report(folder: str, group: CaseGroup, call: cases.CaseCall,
                      results: list[Result], truth: str | None, rule_text: str, model_path: str,
                      spec, columns: int = 3) -> str:
    """folder/report.md: the call, a grid of the fields (heatmap panels where the model has
    them, written beside it by classify()), the referred fields and the unreadable files."""
    os.makedirs(folder, exist_ok=True)
    esc = html.escape
    title = call.label if call.label != cases.REFER else f"REFER ({call.reason})"
    lines = [f"# Case {group.name}: {title}", "", f"> {DISCLAIMER}", "",
             "| | |", "|---|---|",
             f"| call | **{call.label}**" + (f" ({call.reason}: {call.detail})" if call.reason
                                            else "") + " |",
             f"| best guess | {call.guess or '-'}" + ("" if call.probability is None else
                                                        f" (mean probability {call.probability:.3f}"
                                                        f" over {call.accepted} accepted fields)")
             + " |",
             f"| fields | {call.fields} read, {call.accepted} accepted, "
             f"{call.fields - call.accepted} referred, {call.failed} unreadable |",
             "| accepted per class | " + ", ".join(f"{k} {v}" for k, v in call.counts.items())
             + " |",
             "| discordance | " + ("-" if call.discordance is None else f"{call.discordance:.2f}")
             + " |",
             f"| rule | {rule_text} |", f"| class folder | {truth or '-'} |",
             f"| folder | `{group.folder}` |", f"| model | `{model_path}` |", ""]
    readable = [(r, p) for r, (p, _) in zip(results, group.inputs) if not r.error]
    if readable:
        lines += ["## Fields", "", "Each field: the image, the heatmap of its best class over "
                  "it, and the leukocyte outline the model used (where the model has heatmaps).",
                  "", "<table>"]
        for start in range(0, len(readable), columns):
            lines.append("<tr>")
            for r, path in readable[start:start + columns]:
                image = r.heatmap or thumbnail(path, spec, folder, _stem(path, folder))
                picture = (f'<img src="{esc(os.path.relpath(image, folder))}" width="300"><br>'
                           if image else "")
                verdict = (f"{r.label} {r.probability:.3f}" if not r.reason else
                           f"REFER {r.reason} (best guess {r.guess} {r.probability:.3f})")
                lines.append(f"<td>{picture}<code>{esc(os.path.basename(r.source))}</code><br>"
                             f"{esc(verdict)}</td>")
            lines.append("</tr>")
        lines += ["</table>", ""]
    referred = [r for r, _ in readable if r.reason]
    if referred:
        lines += ["## Referred fields", "", "| field | reason | detail | best guess |",
                  "|---|---|---|---|"]
        lines += [f"| `{os.path.basename(r.source)}` | {r.reason} | {r.detail} | "
                  f"{r.guess} {r.probability:.3f} |" for r in referred]
        lines.append("")
    failed = [r for r in results if r.error]
    if failed:
        lines += ["## Unreadable files", "", "| file | error |", "|---|---|"]
        lines += [f"| `{r.source}` | {r.error} |" for r in failed]
        lines.append("")
    if not results:
        lines += ["No image file in this case folder.", ""]
    path = os.path.join(folder, "report.md")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    return path


def _stem(path: str, folder: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0] or "field"
    name, n = stem, 1
    while os.path.exists(os.path.join(folder, f"{name}.png")):
        name, n = f"{stem}.{n}", n + 1
    return name


def write_index(root: str, entries: list[tuple[dict, str]], rule_text: str) -> str:
    """root/index.md: every case's call with a link to its report."""
    lines = ["# Cases", "", f"> {DISCLAIMER}", "", f"Rule: {rule_text}.", "",
             "| case | call | reason | fields | accepted | report |", "|---|---|---|---:|---:|---|"]
    for row, report in entries:
        lines.append(f"| {row['case']} | {row['label']} | {row['reason'] or '-'} | "
                     f"{row['fields']} | {row['accepted']} | "
                     f"[report]({os.path.relpath(report, root)}) |")
    path = os.path.join(root, "index.md")
    os.makedirs(root, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path
