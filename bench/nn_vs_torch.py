#!/usr/bin/python3
"""NN inference throughput: the flock core runtime vs torch and ONNX Runtime on CPU, one thread, same run.

For each model (a tabular MLP and a 1-D CNN) and batch size (1, 64, 4096 by default):
  * the model is built in torch with fixed weights and exported to ONNX (dynamic batch);
  * one input batch is drawn (fixed seed) and written to a file both sides use;
  * torch eager, torch TorchScript (traced + frozen), flock (the flock_bench_nn runner, a
    subprocess) and, when bench/ort/install.sh has installed onnxruntime-node, ONNX Runtime (the
    bench/ort/ort_runner.js runner under node, a subprocess timed the same way on the same ONNX file
    and input file) are timed alternately, --rounds times each; the median of each is reported;
  * flock's and ONNX Runtime's outputs on that batch are compared with torch eager's
    (max abs diff <= --tol).
Goals: flock >= best torch (every batch); flock >= 1.5x ONNX Runtime at batch >= 64.

Exit status: 0 when every measurement ran and every output agreed (PASS or FAIL against the goal
is a measurement, not an error); 1 when flock could not load or run a model, or its output
disagreed with torch; 2 on bad arguments.

Run with the system interpreter (/usr/bin/python3: torch, onnx, numpy), e.g.
  cmake --build build --target bench
  /usr/bin/python3 bench/nn_vs_torch.py --runner build/bench/flock_bench_nn
"""

import os

# One thread everywhere, set before torch (and its OpenMP / BLAS) is loaded.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import onnx
import torch
from torch import nn

GOAL = 1.0
ORT_GOAL = 1.5       # flock / ONNX Runtime, at batch >= ORT_GOAL_MIN_BATCH
ORT_GOAL_MIN_BATCH = 64
SEQ_LEN = 64
MLP_FEATURES = 28


class MLP(nn.Module):
    """Tabular MLP: 28 -> 256 -> 256 -> 1 (Gemm, Relu)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(MLP_FEATURES, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 1))

    def forward(self, x):
        return self.net(x)


class CNN1d(nn.Module):
    """1-D CNN over length-64 sequences: Conv(1->16,k5) Relu Conv(16->32,k5) Relu MaxPool(2)
    GlobalAveragePool Flatten Gemm(32->1)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 16, 5), nn.ReLU(),
            nn.Conv1d(16, 32, 5), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.AdaptiveAvgPool1d(1))
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


MODELS = {
    "mlp": (MLP, (MLP_FEATURES,), "MLP 28-256-256-1"),
    "cnn": (CNN1d, (1, SEQ_LEN), "CNN1d 1x64 conv16,conv32,pool,fc"),
}


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in flags]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu,
        "simd": simd,
        "loadavg": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": _torch_capability(),
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }


def _torch_capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":", 1)[1].strip()
    return "unknown"


def export(model, example, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, example, path, input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=13)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return sorted({n.op_type for n in proto.graph.node})


def time_torch(fn, x, min_time, warmup, min_iters):
    """Mirrors the runner: warm-up, then timed calls (each includes dropping the output)."""
    end = time.perf_counter() + warmup
    while True:
        fn(x)
        if time.perf_counter() >= end:
            break
    total = 0
    iters = 0
    min_ns = min_time * 1e9
    while total < min_ns or iters < min_iters:
        t0 = time.perf_counter_ns()
        y = fn(x)
        del y
        total += time.perf_counter_ns() - t0
        iters += 1
    ns = total / iters
    return {"iterations": iters, "ns_per_batch": ns, "rows_per_second": x.shape[0] * 1e9 / ns}


class FlockError(Exception):
    pass


def time_flock(runner, onnx_path, batch, input_path, min_time, warmup, min_iters, dump=None):
    cmd = [runner, onnx_path, "--batch", str(batch), "--input", input_path,
           "--min-time", str(min_time), "--warmup", str(warmup), "--min-iters", str(min_iters)]
    if dump:
        cmd += ["--dump-output", dump]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")
        raise FlockError(msg.splitlines()[0].removeprefix("flock_bench_nn: "))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_ort(ort_runner, modules, onnx_path, batch, input_path, min_time, warmup, min_iters, dump=None):
    cmd = ["node", ort_runner, onnx_path, "--batch", str(batch), "--input", input_path,
           "--min-time", str(min_time), "--warmup", str(warmup), "--min-iters", str(min_iters),
           "--modules", modules]
    if dump:
        cmd += ["--dump-output", dump]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")
        raise FlockError("ONNX Runtime: " + msg.splitlines()[0].removeprefix("ort_runner: "))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ort_available(modules):
    return (shutil.which("node") is not None and
            os.path.isfile(os.path.join(modules, "node_modules", "onnxruntime-node", "package.json")))


def fmt_rate(v):
    return "-" if v is None else f"{v:,.0f}"


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runner", required=True, help="path to flock_bench_nn")
    ap.add_argument("--work-dir", default="bench-nn", help="where models, inputs and results go")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batches", default="1,64,256,4096")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.4, help="timed seconds per measurement")
    ap.add_argument("--warmup", type=float, default=0.1, help="warm-up seconds per measurement")
    ap.add_argument("--min-iters", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs diff flock vs torch")
    ap.add_argument("--no-torchscript", action="store_true", help="time torch eager only")
    ap.add_argument("--build-type", default="", help="CMake build type of the runner (for the report)")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--ort-modules", default=os.path.join(here, "..", "build", "bench-ort"),
                    help="folder where bench/ort/install.sh put onnxruntime-node (its node_modules)")
    ap.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    args = ap.parse_args()

    runner = os.path.abspath(args.runner)
    if not (os.path.isfile(runner) and os.access(runner, os.X_OK)):
        print(f"nn_vs_torch: runner {runner} not found or not executable", file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            print(f"nn_vs_torch: unknown model {m!r} (have {', '.join(MODELS)})", file=sys.stderr)
            return 2
    batches = [int(b) for b in args.batches.split(",")]
    os.makedirs(args.work_dir, exist_ok=True)

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    info = machine_info()
    ort_runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ort", "ort_runner.js")
    ort_modules = os.path.abspath(args.ort_modules)
    use_ort = not args.no_ort and ort_available(ort_modules)
    if not args.no_ort and not use_ort:
        print(f"note: ONNX Runtime left out: onnxruntime-node not under {ort_modules} "
              "(bench/ort/install.sh installs it)", flush=True)
    info["torch_threads"] = torch.get_num_threads()
    info["flock_threads"] = 1
    info["build_type"] = args.build_type or "unknown"
    load = "-" if info["loadavg"] is None else " ".join(f"{v:.2f}" for v in info["loadavg"])
    print(f"Machine: nproc {info['nproc']} ({info['usable_cpus']} usable), {info['cpu_model']}; "
          f"SIMD {','.join(info['simd']) or '-'}; load avg {load}")
    print(f"torch {info['torch']} (CPU capability {info['torch_cpu_capability']}), "
          f"{info['torch_threads']} thread; flock runner {runner} ({info['build_type']} build), 1 thread")
    if args.build_type and args.build_type != "Release":
        print(f"note: the runner was built as {args.build_type!r}; configure with -DCMAKE_BUILD_TYPE=Release "
              "for numbers worth quoting")
    print(f"{args.rounds} alternating rounds per case, >= {args.min_time}s timed each; medians shown\n",
          flush=True)

    rows = []
    errors = 0
    for name in models:
        cls, feat_shape, desc = MODELS[name]
        torch.manual_seed(0)
        model = cls().eval()
        onnx_path = os.path.join(args.work_dir, f"{name}.onnx")
        ops = export(model, torch.zeros((2,) + feat_shape), onnx_path)
        print(f"{name}: {desc}; ONNX ops {', '.join(ops)}", flush=True)
        scripted = None
        if not args.no_torchscript:
            with torch.no_grad():
                scripted = torch.jit.freeze(torch.jit.trace(model, torch.zeros((2,) + feat_shape)))

        for batch in batches:
            rng = np.random.default_rng(1000 + batch)
            x_np = rng.standard_normal((batch,) + feat_shape, dtype=np.float32)
            input_path = os.path.join(args.work_dir, f"{name}_b{batch}.in.f32")
            out_path = os.path.join(args.work_dir, f"{name}_b{batch}.flock-out.f32")
            x_np.tofile(input_path)
            x = torch.from_numpy(x_np)
            row = {"model": name, "batch": batch, "torch": [], "torchscript": [], "flock": [], "ort": [],
                   "max_abs_diff": None, "ort_max_abs_diff": None, "error": None}
            ort_out_path = os.path.join(args.work_dir, f"{name}_b{batch}.ort-out.f32")
            with torch.inference_mode():
                ref = model(x).numpy().reshape(-1).astype(np.float64)

                def eager(t):
                    return model(t)

                for r in range(args.rounds):
                    row["torch"].append(time_torch(eager, x, args.min_time, args.warmup, args.min_iters))
                    if scripted is not None:
                        row["torchscript"].append(
                            time_torch(scripted, x, args.min_time, args.warmup, args.min_iters))
                    if row["error"] is None:
                        try:
                            row["flock"].append(time_flock(runner, onnx_path, batch, input_path, args.min_time,
                                                           args.warmup, args.min_iters,
                                                           dump=out_path if r == 0 else None))
                        except FlockError as e:
                            row["error"] = str(e)
                    if use_ort and row["error"] is None:
                        try:
                            row["ort"].append(time_ort(ort_runner, ort_modules, onnx_path, batch, input_path,
                                                       args.min_time, args.warmup, args.min_iters,
                                                       dump=ort_out_path if r == 0 else None))
                        except FlockError as e:
                            row["error"] = str(e)
                        if r == 0 and row["error"] is None:
                            got = np.fromfile(ort_out_path, dtype=np.float32).astype(np.float64)
                            row["ort_max_abs_diff"] = (float(np.max(np.abs(got - ref)))
                                                       if got.shape == ref.shape and got.size else None)
                            if row["ort_max_abs_diff"] is None or not row["ort_max_abs_diff"] <= args.tol:
                                row["error"] = f"ONNX Runtime's output differs from torch ({row['ort_max_abs_diff']})"
                    if r == 0 and row["error"] is None and row["flock"]:
                        got = np.fromfile(out_path, dtype=np.float32).astype(np.float64)
                        if got.shape != ref.shape:
                            row["error"] = f"output has {got.size} values, torch {ref.size}"
                        else:
                            row["max_abs_diff"] = float(np.max(np.abs(got - ref))) if got.size else 0.0
                            if not row["max_abs_diff"] <= args.tol:
                                row["error"] = (f"output differs from torch: max abs diff "
                                                f"{row['max_abs_diff']:.3g} > {args.tol:g}")

            def med(series):
                return statistics.median(m["rows_per_second"] for m in series) if series else None

            def spread(series):
                v = [m["rows_per_second"] for m in series]
                return (max(v) - min(v)) / statistics.median(v) if len(v) > 1 else 0.0

            row["torch_rps"] = med(row["torch"])
            row["torchscript_rps"] = med(row["torchscript"])
            row["flock_rps"] = None if row["error"] else med(row["flock"])
            best = max(v for v in (row["torch_rps"], row["torchscript_rps"]) if v is not None)
            row["best_torch_rps"] = best
            row["ratio"] = row["flock_rps"] / row["torch_rps"] if row["flock_rps"] else None
            row["ratio_best"] = row["flock_rps"] / best if row["flock_rps"] else None
            row["ort_rps"] = None if row["error"] else med(row["ort"])
            row["ratio_ort"] = row["flock_rps"] / row["ort_rps"] if row["flock_rps"] and row["ort_rps"] else None
            row["spread"] = max(spread(s) for s in (row["torch"], row["torchscript"], row["flock"], row["ort"]) if s)
            row["ort_verdict"] = "-"
            if row["error"]:
                errors += 1
                row["verdict"] = "ERROR"
            else:
                row["verdict"] = "PASS" if row["ratio_best"] >= GOAL else "FAIL"
                if row["ratio_ort"] is not None and batch >= ORT_GOAL_MIN_BATCH:
                    row["ort_verdict"] = "PASS" if row["ratio_ort"] >= ORT_GOAL else "FAIL"
            rows.append(row)
            status = row["error"] or (f"flock/torch {row['ratio']:.2f}, vs best torch {row['ratio_best']:.2f}, "
                                      + (f"vs ONNX Runtime {row['ratio_ort']:.2f}, " if row["ratio_ort"] else "")
                                      + f"max|diff| {row['max_abs_diff']:.2g}")
            print(f"  batch {batch:>5}: {status}", flush=True)

    hdr = ["model", "batch", "torch rows/s", "torchscript rows/s", "ORT rows/s", "flock rows/s", "flock/torch",
           "flock/best torch", f"goal >= {GOAL:.1f}", "flock/ORT", f"goal >= {ORT_GOAL:.1f}", "max|diff|", "spread"]
    table = []
    for r in rows:
        table.append([r["model"], str(r["batch"]), fmt_rate(r["torch_rps"]), fmt_rate(r["torchscript_rps"]),
                      fmt_rate(r["ort_rps"]), fmt_rate(r["flock_rps"]), fmt_ratio(r["ratio"]),
                      fmt_ratio(r["ratio_best"]), r["verdict"], fmt_ratio(r["ratio_ort"]), r["ort_verdict"],
                      "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}",
                      f"{100 * r['spread']:.0f}%"])
    widths = [max(len(h), *(len(t[k]) for t in table)) for k, h in enumerate(hdr)]
    right = {1, 2, 3, 4, 5, 6, 7, 9, 11, 12}

    def line(cells):
        return "  ".join(c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    print()
    print(line(hdr))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print(line(t))
    for r in rows:
        if r["error"]:
            print(f"ERROR {r['model']} batch {r['batch']}: {r['error']}")
    n_pass = sum(r["verdict"] == "PASS" for r in rows)
    ort_rows = [r for r in rows if r["ort_verdict"] != "-"]
    print(f"\n{n_pass}/{len(rows)} cases at or above the goal (flock rows/s >= best torch rows/s); "
          f"spread = (max-min)/median over rounds, worst of the series")
    if ort_rows:
        print(f"{sum(r['ort_verdict'] == 'PASS' for r in ort_rows)}/{len(ort_rows)} cases at batch >= "
              f"{ORT_GOAL_MIN_BATCH} at or above flock >= {ORT_GOAL}x ONNX Runtime "
              f"(onnxruntime-node {rows[0]['ort'][0].get('ort_version', '?') if rows[0]['ort'] else '?'}, CPU EP, 1 thread)")

    results_path = os.path.join(args.work_dir, "results.json")
    with open(results_path, "w") as f:
        json.dump({"machine": info, "goal": GOAL, "ort_goal": ORT_GOAL, "rounds": args.rounds, "min_time": args.min_time,
                   "results": rows}, f, indent=2)
    print(f"raw results: {results_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
