"""Compare `edge-classify --jsonl` runs with a reference run: top-1 labels and probabilities.

Usage: python compare.py --model M.tflite [--max-steps N] REFERENCE.jsonl RUN.jsonl...
Prints one Markdown row per run; exits 1 when the model's top-1 class differs, an image is
missing or failed, or a probability differs by more than N output steps of the model (its
output tensor's quantisation scale: 1/256 for hemalite's int8 model). Without --max-steps
only the labels must agree (and the difference is printed). A decision that differs
(REFER on one side only, from the domain check or the confidence floor) is reported, not
failed: those checks compute in float outside the model.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hemalite.edge.runtime import load_model


def read_run(path: str) -> dict[str, dict[str, float]]:
    """source -> the model's top-1 class, the decision (a class or REFER), every probability."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if r.get("error"):
            raise SystemExit(f"{path}: {r['source']} failed: {r['error']}")
        if not r.get("top"):
            raise SystemExit(f"{path}: no top-k probabilities (run edge-classify --top-k N)")
        rows[r["source"]] = {"top1": r["top"][0][0], "decision": r["label"],
                             "probs": dict(r["top"])}
    return rows


def compare(reference: dict, run: dict) -> tuple[int, int, float]:
    """(images whose top-1 differs, whose decision differs, largest probability difference)."""
    if set(reference) != set(run):
        raise SystemExit(f"different images: {sorted(set(reference) ^ set(run))[:4]}")
    flips = sum(reference[s]["top1"] != run[s]["top1"] for s in reference)
    decisions = sum(reference[s]["decision"] != run[s]["decision"] for s in reference)
    diff = max(abs(p - run[s]["probs"].get(c, 0.0))
               for s in reference for c, p in reference[s]["probs"].items())
    return flips, decisions, diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--model", required=True, help="the model the runs used")
    parser.add_argument("--max-steps", type=float, default=None,
                        help="allowed probability difference in output steps")
    args = parser.parse_args()
    scale = load_model(args.model).output_details["quantization"][0]
    step = scale or 1 / 256  # a float model: count in int8 steps all the same
    reference = read_run(args.reference)
    print(f"| run | images | top-1 as {Path(args.reference).stem} | max prob difference "
          "| decisions (REFER) |")
    print("|---|---:|---|---:|---|")
    failed = False
    for path in args.runs:
        flips, decisions, diff = compare(reference, read_run(path))
        bad = flips or (args.max_steps is not None and diff > args.max_steps * step * 1.001)
        failed |= bool(bad)
        print(f"| {Path(path).stem} | {len(reference)} | "
              f"{'identical' if not flips else f'{flips} DIFFER'} | "
              f"{diff:.5f} ({diff / step:.0f} steps of {step:.5f})" + (" FAIL" if bad else "")
              + f" | {'same' if not decisions else f'{decisions} differ'} |")
        if not bad and diff > step * 1.001:
            print(f"warning: {Path(path).stem} is not bit-exact: {diff / step:.0f} output "
                  "steps from the reference", file=sys.stderr)
    if failed:
        limit = "identical labels" + (f", at most {args.max_steps:g} output step(s)"
                                      if args.max_steps is not None else "")
        print(f"error: an emulated aarch64 run differs from x86-64 ({limit} required)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
