#!/usr/bin/env python3
"""One table of issue 15's goals from the results one `make bench` run wrote.

Reads the raw results the benchmarks leave behind and prints, for every goal, the measured ratio:
  - the core against ONNX Runtime on the MLPs and CNNs, batch >= 64 (bench/nn_vs_torch.py's results.json);
  - in the database, `SELECT sum(flock.predict(...))` over the 1M-row table, against ONNX Runtime in
    memory (ONNX models) and libxgboost's in-memory predict (tree models), one core, and the scaling
    from one to two cores: two parallel workers, the leader not participating (bench/indb/run.py's
    results.json). bench/parallel/scaling.py takes the scaling apart (first-row cost, leader + 1
    worker); it is run by hand.
Every ratio is taken from one run's measurements as those scripts took them (1 core: CPU-time rates;
2 cores: wall-clock rates), so nothing here measures anything itself.

With --readme FILE the table (and the run's load) replaces what stands between the markers
`<!-- make-bench:begin -->` and `<!-- make-bench:end -->` in FILE, so the README's performance
summary is regenerated from the run, not edited by hand.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "indb"))
from models import SPECS as INDB_MODELS  # noqa: E402  (which contender "native" is: the model's kind)

BEGIN = "<!-- make-bench:begin -->"
END = "<!-- make-bench:end -->"

NN_GOAL = 1.5          # the core >= 1.5x ONNX Runtime, MLPs and CNNs, batch >= 64
NN_MIN_BATCH = 64
INDB_ORT_GOAL = 1.0    # in the database >= 1x ONNX Runtime in memory
INDB_TREE_GOAL = 5.0   # in the database >= 5x libxgboost in memory, one thread
SCALING_GOAL = 1.8     # 1 -> 2 cores


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        d = json.load(f)
    d["_written"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.path.getmtime(path)))
    return d


def verdict(ratio, goal):
    return "PASS" if ratio >= goal else "FAIL"


def nn_rows(nn):
    out = []
    for r in nn.get("results", []):
        if r.get("error") or r.get("batch", 0) < NN_MIN_BATCH or r.get("ratio_ort") is None:
            continue
        out.append((f"core {r['model']} batch {r['batch']}: flock / ONNX Runtime", r["ratio_ort"], NN_GOAL))
    return out


def indb_rows(indb):
    rates = {}
    for m in indb.get("measurements", []):
        kind = "cpu" if m["run"] == "1 core" else "wall"
        t = statistics.median(m[kind])
        rates[(m["run"], m["model"], m["contender"])] = m["rows"] / t if t > 0 else float("inf")
    out = []
    models = sorted({k[1] for k in rates if k[1] != "-"})
    for model in models:
        on = rates.get(("1 core", model, "flock_on"))
        if on is None:
            continue
        native_label = {"xgboost": "libxgboost", "sklearn": "sklearn", "torch": "torch"}.get(
            INDB_MODELS.get(model, ("?",))[0], "its library")
        if ("1 core", model, "native") in rates and native_label == "libxgboost":
            out.append((f"in-DB {model}: flock / libxgboost in memory, 1 core",
                        on / rates[("1 core", model, "native")], INDB_TREE_GOAL))
        if ("1 core", model, "ort") in rates:
            out.append((f"in-DB {model}: flock / ONNX Runtime in memory, 1 core",
                        on / rates[("1 core", model, "ort")], INDB_ORT_GOAL))
        two = rates.get(("2 cores", model, "flock_on"))
        if two is not None:
            # 1 core is rated by CPU time; scaling is a wall-clock question on both sides.
            one_wall = [m for m in indb["measurements"]
                        if (m["run"], m["model"], m["contender"]) == ("1 core", model, "flock_on")][0]
            one = one_wall["rows"] / statistics.median(one_wall["wall"])
            out.append((f"in-DB {model}: 2 cores / 1 core (wall)", two / one, SCALING_GOAL))
    return out


def machine_line(sources):
    parts = []
    for name, d in sources:
        if d is None:
            continue
        la = (d.get("machine") or {}).get("loadavg")
        load = f", load average {la[0]:.2f} at its end" if la else ""
        parts.append(f"{name}: results of {d['_written']}{load}")
    return "; ".join(parts)


def render(rows, sources):
    lines = ["| goal | measured | target | result |", "|---|---:|---:|---|"]
    for label, ratio, goal in rows:
        lines.append(f"| {label} | {ratio:.2f}x | {goal:g}x | {verdict(ratio, goal)} |")
    met = sum(ratio >= goal for _, ratio, goal in rows)
    lines.append("")
    lines.append(f"{met} of {len(rows)} at their goal. {machine_line(sources)}.")
    return "\n".join(lines)


def replace_section(path, text):
    with open(path) as f:
        s = f.read()
    a, b = s.find(BEGIN), s.find(END)
    if a < 0 or b < a:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} section to regenerate")
    s = s[:a + len(BEGIN)] + "\n" + text + "\n" + s[b:]
    with open(path, "w") as f:
        f.write(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nn", help="bench/nn_vs_torch.py's results.json")
    ap.add_argument("--indb", help="bench/indb/run.py's results.json")
    ap.add_argument("--readme", help="regenerate this file's make-bench section from the table")
    args = ap.parse_args()

    nn, indb = load(args.nn), load(args.indb)
    if nn is None and indb is None:
        raise SystemExit("no results: run `make bench` first (or pass --nn / --indb)")
    rows = (nn_rows(nn) if nn else []) + (indb_rows(indb) if indb else [])
    sources = [("core", nn), ("in-DB", indb)]
    text = render(rows, sources)
    print(text)
    if args.readme:
        replace_section(args.readme, text)
        print(f"\n{args.readme}: make-bench section regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
