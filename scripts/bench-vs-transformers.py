#!/usr/bin/env python3
"""Strata against Hugging Face transformers, side by side on one machine.

For every model and workload it runs `strata bench --json` and `../shared/bench/hf_baseline.py`
alternately (A B A B ...), each process doing its own warm-up and median of repeated runs, and
prints a Markdown table of the medians over the rounds with the ratio Strata / transformers taken
round by round (so drift of the machine's speed cancels). Raw JSON lines go to --raw.

Usage (from the repository root, after scripts/quickstart.sh or a release build):
  scripts/bench-vs-transformers.py --python .venv-hf/bin/python --models ~/.cache/strata/models
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

MODELS = {
    "SmolLM2-135M": ("smollm2-135m-instruct-q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "Qwen2.5-Coder-0.5B": ("qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen.gguf"),
}
# (label, strata arguments, baseline arguments)
WORKLOADS = [
    ("forward 1×512", ["--batch", "1", "--seq", "512"], ["--mode", "forward", "--batch", "1", "--seq", "512"]),
    ("forward 8×128", ["--batch", "8", "--seq", "128"], ["--mode", "forward", "--batch", "8", "--seq", "128"]),
    ("generate 64 after 32", ["--seq", "32", "--generate", "64"],
     ["--mode", "generate", "--prompt-len", "32", "--new-tokens", "64"]),
]


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="a Python with torch + transformers + gguf + accelerate")
    ap.add_argument("--models", required=True, help="the folder fetch-models.sh filled")
    ap.add_argument("--strata", default=os.path.join(root, "target", "release", "strata"))
    ap.add_argument("--baseline", default=os.path.join(root, "..", "shared", "bench", "hf_baseline.py"))
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per workload")
    ap.add_argument("--runs", type=int, default=5, help="measured runs inside each process")
    ap.add_argument("--only", default=None, help="run only models whose name contains this")
    ap.add_argument("--workload", default=None, help="run only workloads whose label contains this")
    ap.add_argument("--raw", default=None, help="append every JSON line to this file")
    a = ap.parse_args()

    rows = []
    for name, (folder, gguf) in MODELS.items():
        if a.only and a.only not in name:
            continue
        path = os.path.join(a.models, folder)
        for label, s_args, h_args in WORKLOADS:
            if a.workload and a.workload not in label:
                continue
            strata = [a.strata, "bench", os.path.join(path, gguf), "--json", "--runs", str(a.runs)] + s_args
            hf = [a.python, a.baseline, "--model", path, "--gguf", gguf, "--runs", str(a.runs)] + h_args
            s_tps, h_tps, ratios, s_rss, h_rss = [], [], [], [], []
            for r in range(a.rounds):
                h = run_json(hf)
                s = run_json(strata)
                for rec in (h, s):
                    rec["round"] = r
                    if a.raw:
                        with open(a.raw, "a") as f:
                            f.write(json.dumps(rec) + "\n")
                h_tps.append(h["tokens_per_s"])
                s_tps.append(s["tokens_per_s"])
                ratios.append(s["tokens_per_s"] / h["tokens_per_s"])
                s_rss.append(s["peak_rss_mb"])
                h_rss.append(h["peak_rss_mb"])
                print(f"{name} {label} round {r}: strata {s['tokens_per_s']:.1f} tok/s, "
                      f"transformers {h['tokens_per_s']:.1f} tok/s", file=sys.stderr)
            rows.append((name, label, statistics.median(s_tps), statistics.median(h_tps),
                         statistics.median(ratios), min(ratios), max(ratios), max(s_rss), max(h_rss)))

    print("| model | workload | Strata tok/s | transformers tok/s | ratio (median, min–max) "
          "| Strata peak RSS MiB | transformers peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, label, s, h, ratio, lo, hi, srss, hrss in rows:
        print(f"| {name} | {label} | {s:.1f} | {h:.1f} | **{ratio:.2f}×** ({lo:.2f}–{hi:.2f}) "
              f"| {srss:.0f} | {hrss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
