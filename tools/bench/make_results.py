#!/usr/bin/python3
"""Writes tools/bench/RESULTS.md from the files tools/bench/run.sh collects in one folder:

    meta.json          machine, versions, commands, load averages (run.sh)
    onnxkfac.jsonl     one object per (model, batch, threads) from onnx-kfac-bench --out
    torch.jsonl        header + one object per (model, batch, threads) from torch_step.py --out
    profile.json       ONNX Runtime op profile of training graphs (onnx-kfac-bench --profile-out)
    experiments.json   A/B experiments (onnx-kfac-bench --experiments-out)

    /usr/bin/python3 tools/bench/make_results.py DIR > tools/bench/RESULTS.md
"""
import json
import math
import os
import sys


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path, default):
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def ms(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio(a, b, fmt="{:.2f}"):
    if a is None or b is None or b == 0:
        return "–"
    return fmt.format(a / b)


def pct(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{(a / b - 1) * 100:+.0f}%"


BUSY = "†"
QUIET = 0.3
MALLOC = {"keep": "freed memory kept (`torch_malloc.py`: no mmap per buffer up to 32 MiB, no trimming; without it PyTorch page-faults its buffers in again every step)",
          "default": "glibc's defaults (`--malloc default`)"}


def others(r, key="step"):
    v = (r or {}).get("other_cores", {}).get(key)
    return v


def fmt_others(a, b):
    def one(v):
        return "?" if v is None else f"{v:.2f}"
    mark = BUSY if any(v is not None and v > QUIET for v in (a, b)) else ""
    return f"{one(a)} / {one(b)}{mark}"


def med(r, key):
    v = r.get(key) if r else None
    return v["median_ms"] if v else None


def p90(r, key):
    v = r.get(key) if r else None
    return v["p90_ms"] if v else None


TIMINGS = ("step", "run", "sgd", "forward", "fisher_step", "bare_step", "static_step")


def merge(records):
    """One row from the repetitions of a configuration: each timing from the repetition with the
    lowest median (its p90 and the load it saw come along); allocations: the largest count."""
    out = dict(records[0])
    out["repeats"] = len(records)
    out["other_cores"] = dict(records[0].get("other_cores", {}))
    for key in TIMINGS:
        have = [r for r in records if r.get(key)]
        if not have:
            continue
        best = min(have, key=lambda r: r[key]["median_ms"])
        out[key] = best[key]
        if key == "step" and "torch_threads" in best:
            out["torch_threads"], out["blas_threads"] = best["torch_threads"], best["blas_threads"]
        if key == "step" and "minor_faults_per_step" in best:
            out["minor_faults_per_step"] = best["minor_faults_per_step"]
        if key == "step" and "probe_gflops" in best:
            out["probe_gflops"] = best["probe_gflops"]
        if "other_cores" in best and key in best["other_cores"]:
            out["other_cores"][key] = best["other_cores"][key]
    for key in ("alloc_bytes", "alloc_fisher_bytes"):
        if key in records[0]:
            out[key] = max(r[key] for r in records)
    for key in ("alloc_recheck_bytes", "alloc_fisher_recheck_bytes"):
        vals = [r.get(key) for r in records if r.get(key) is not None]
        out[key] = max(vals) if vals else None
    return out


def merged(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("batch"), r.get("threads")), []).append(r)
    return [merge(g) for g in groups.values()]


SLOW = "‡"
SLOW_BELOW = 0.85


def probe_low(r):
    """The lower of a row's two speed probes (before and after its measurements), GFLOP/s, or None."""
    p = (r or {}).get("probe_gflops")
    return min(p["before"], p["after"]) if p else None


def probe_best(rows):
    """The best probe of any row (either side of it), the run's reference for that framework."""
    vals = [max(r["probe_gflops"]["before"], r["probe_gflops"]["after"]) for r in rows if (r or {}).get("probe_gflops")]
    return max(vals) if vals else None


def fmt_probe(r, best):
    low = probe_low(r)
    if low is None or not best:
        return "?"
    return f"{low / best:.0%}{SLOW if low < SLOW_BELOW * best else ''}"


def faults(t):
    """Minor page faults per PyTorch step, or ? for rows measured before torch_step.py counted them."""
    v = (t or {}).get("minor_faults_per_step")
    return "?" if v is None else f"{v:.0f}"


def main():
    d = sys.argv[1]
    meta = read_json(os.path.join(d, "meta.json"), {})
    raw_ours = read_jsonl(os.path.join(d, "onnxkfac.jsonl"))
    ours = merged(raw_ours)
    torch_rows = read_jsonl(os.path.join(d, "torch.jsonl"))
    best_ours = probe_best([r for r in raw_ours if "skipped" not in r])
    best_theirs = probe_best([r for r in torch_rows if "header" not in r])
    headers = [r["header"] for r in torch_rows if "header" in r]
    torch_header = headers[0] if headers else {}
    theirs = {(r["model"], r["batch"], r["threads"]): r for r in merged([r for r in torch_rows if "header" not in r])}
    profile = read_json(os.path.join(d, "profile.json"), [])
    experiments = read_json(os.path.join(d, "experiments.json"), [])

    out = []
    w = out.append
    w("# OnnxKfac speed benchmarks")
    w("")
    w("Generated by `tools/bench/run.sh` (method and caveats: [README.md](README.md)). "
      "Times are per training step in milliseconds: median (p90) over at least "
      f"{meta.get('steps', '?')} steps (fast configurations run until 0.25 s have passed) after {meta.get('warmup', '?')} warm-up steps; "
      f"every configuration ran {meta.get('repeat', '1')} times (OnnxKfac and PyTorch alternating) and each number is from the "
      "repetition with the lowest median.")
    w("")
    w(f"- Date: {meta.get('date', '?')}; commit `{meta.get('commit', '?')}`")
    w(f"- Machine: {meta.get('nproc', '?')} CPUs (`nproc`), `{meta.get('cpu', '?')}` (/proc/cpuinfo), "
      f"{meta.get('cpu_flags', '')}; {meta.get('memory', '')}")
    w(f"- Load average (1 min) at start / end: {meta.get('load_start', '?')} / {meta.get('load_end', '?')}. "
      "The machine is shared with other jobs: the `others` column gives the cores other processes kept busy "
      "while the step times were taken (OnnxKfac / PyTorch; from /proc/stat minus the benchmark's own CPU time). "
      f"A measurement is retried (up to {meta.get('attempts', '?')} attempts) while others use more than 0.3 cores, keeping the quietest; "
      f"rows marked {BUSY} stayed above that. With one of two cores taken, 2-thread rows measure contention more than speed.")
    w(f"- Software: .NET {meta.get('dotnet', '?')}, Microsoft.ML.OnnxRuntime {meta.get('ort', '?')} (CPU), "
      f"PyTorch {torch_header.get('torch', '?')} (Debian python3-torch) with BLAS `{', '.join(torch_header.get('blas', [])) or '?'}`; "
      f"PyTorch's glibc malloc: {MALLOC.get(torch_header.get('malloc', 'default'), '?')}")
    w(f"- Wall time of the whole run: {meta.get('wall_s', '?')} s")
    w("")
    w("Commands (from the repository root):")
    w("")
    w("```")
    for c in meta.get("commands", []):
        w(c)
    w("```")
    w("")
    w("Columns: **OnnxKfac** = `session.Run(batch)` + `Sgd.Step` (momentum 0.9) on the default training graph "
      "(layer taps on); **PyTorch** = forward + cross-entropy + backward + `torch.optim.SGD(momentum=0.9).step()`; "
      "**ratio** = OnnxKfac / PyTorch medians (below 1: OnnxKfac faster); **step/fwd** = step / plain forward of the "
      "same framework (ORT: the original model in an `InferenceSession`, same threads, inputs and outputs pre-bound; "
      "PyTorch: forward under `no_grad`); **Fisher** = step with the sampled-Fisher backward pass "
      "(`SampledFisher = true`) and its overhead over the plain step; **no taps** = `LayerTaps = false`; "
      "**static N** = the same model with the batch dimension fixed (no run-time shape arithmetic in the backward graph); "
      "**SGD ms** = the `Sgd.Step` part of the step; **alloc** = managed bytes allocated by 100 untimed steps "
      "(`GC.GetAllocatedBytesForCurrentThread`; see Allocation); **PyTorch threads** = torch (OpenMP) / OpenBLAS threads of the "
      "PyTorch row: for 2 threads both 1/2 and 2/2 are timed and the faster kept (two torch threads over-subscribe 2 cores); "
      "**PyTorch faults / step** = minor page faults per PyTorch step over 20 untimed steps after the timing (see the software line); "
      "**speed probe** = the lower of two 1-thread 512³ MatMul rates taken before and after the row's measurements (ONNX Runtime / "
      f"torch.mm), as a share of the best probe of the run for that framework: this VM has phases in which the host slows every "
      f"process, invisible in *others*; {SLOW} marks a row below {SLOW_BELOW:.0%}.")
    w("")

    models = []
    for r in ours:
        if r["model"] not in models:
            models.append(r["model"])
    for name in models:
        rows = [r for r in ours if r["model"] == name]
        w(f"## {name}")
        w("")
        if "skipped" in rows[0]:
            w(f"`{rows[0]['path']}`: **skipped** — `TrainingGraphBuilder.Build` fails: {rows[0]['skipped'].split('; supported ops')[0]}.")
            pt = [v for k, v in sorted(theirs.items()) if k[0] == name]
            if pt:
                w("")
                w("PyTorch alone, for when the rules land: " + "; ".join(
                    f"batch {v['batch']} threads {v['threads']}: {ms(med(v, 'step'))} ms (fwd {ms(med(v, 'forward'))})" for v in pt) + ".")
            w("")
            continue
        r0 = rows[0]
        w(f"`{r0['path']}`: {r0['parameters']:,} parameters, {r0['layers']} K-FAC layers; "
          f"nodes: model {r0['model_nodes']}, training graph {r0['training_nodes']} "
          f"(with Fisher {r0['fisher_nodes']}, no taps {r0['bare_nodes']}, static batch {r0['static_nodes']}).")
        w("")
        w("| batch | threads | OnnxKfac ms | PyTorch ms | ratio | ORT fwd ms | step/fwd | PyTorch step/fwd | Fisher ms | Fisher overhead | no taps ms | static N ms | SGD ms | alloc B / steps | PyTorch threads | PyTorch faults / step | speed probe | others |")
        w("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: (r["batch"], r["threads"])):
            t = theirs.get((name, r["batch"], r["threads"]))
            s = med(r, "step")
            ts = med(t, "step")
            w(f"| {r['batch']} | {r['threads']} | {ms(s)} ({ms(p90(r, 'step'))}) | "
              f"{ms(ts)} ({ms(p90(t, 'step'))}) | {ratio(s, ts)} | {ms(med(r, 'forward'))} | "
              f"{ratio(s, med(r, 'forward'), '{:.1f}')} | {ratio(ts, med(t, 'forward'), '{:.1f}')} | "
              f"{ms(med(r, 'fisher_step'))} | {pct(med(r, 'fisher_step'), s)} | {ms(med(r, 'bare_step'))} | "
              f"{ms(med(r, 'static_step'))} | {ms(med(r, 'sgd'))} | {r['alloc_bytes']} / {r['alloc_steps']} | "
              f"{(t or {}).get('torch_threads', '?')}/{(t or {}).get('blas_threads', '?')} | {faults(t)} | {fmt_probe(r, best_ours)} / {fmt_probe(t, best_theirs)} | {fmt_others(others(r), others(t))} |")
        w("")

    w("## Allocation")
    w("")
    alloc = [(r["model"], r["batch"], r["threads"], r["alloc_bytes"], r.get("alloc_fisher_bytes"), r["alloc_steps"],
              r.get("alloc_recheck_bytes"), r.get("alloc_fisher_recheck_bytes")) for r in ours if "skipped" not in r]
    nonzero = [a for a in alloc if a[3] or a[4]]
    if not nonzero:
        w(f"Every configuration above allocated **0 bytes** of managed memory over {alloc[0][5] if alloc else '?'} steps "
          "(`Run` + `Sgd.Step` + `StepContext.Advance` after 5 warm-up steps, measured with `GC.GetAllocatedBytesForCurrentThread` "
          "in a separate untimed loop), with and without the sampled-Fisher pass.")
    else:
        w(f"Allocation was measured over {alloc[0][5]} steps (`Run` + `Sgd.Step` + `StepContext.Advance` after 5 warm-up steps, "
          "`GC.GetAllocatedBytesForCurrentThread`, separate untimed loop) for the plain and the Fisher session of every "
          "configuration, and checked again at once when not zero. All zero except:")
        w("")
        for a in nonzero:
            w(f"- {a[0]} batch {a[1]} threads {a[2]}: plain session {a[3]} B"
              + (f" (again: {a[6]} B)" if a[6] is not None else "")
              + f", Fisher session {a[4]} B" + (f" (again: {a[7]} B)" if a[7] is not None else "") + f" over {a[5]} steps")
    w("")

    if profile:
        w("## Where the time goes (ONNX Runtime profile of the training graph)")
        w("")
        w("Kernel time per run summed by op type, from ONNX Runtime's profiler (profiling adds overhead, and these runs "
          "bind outputs to ORT-allocated memory, so the total differs from the step time above). "
          "*Shape arithmetic* = Shape, Size, Concat, Equal, NonZero, Expand of shapes, Reshape, Unsqueeze, Squeeze, Cast, "
          "Gather, Not, Mod, ConstantOfShape: nodes that only compute shapes or move data without arithmetic.")
        w("")
        for p in profile:
            total = p["kernel_ms"]
            train_n = sum(p["training_graph_ops"].values())
            opt_n = sum(p["optimized_ops"].values())
            w(f"### {p['model']}, batch {p['batch']}, threads {p['threads']}: {ms(total)} ms kernel time per run")
            w("")
            w(f"Nodes: training graph {train_n}, after ONNX Runtime's optimizations {opt_n}. "
              "Training graph by op: " + ", ".join(f"{k} {v}" for k, v in sorted(p["training_graph_ops"].items(), key=lambda kv: -kv[1])) + ".")
            w("")
            w("| op | nodes | ms/run | share |")
            w("|---|---:|---:|---:|")
            for o in p["ops"][:12]:
                w(f"| {o['op']} | {o['nodes']} | {o['ms']:.3f} | {o['ms'] / total * 100:.0f}% |")
            shape_ops = {"Shape", "Size", "Concat", "Equal", "NonZero", "Reshape", "Unsqueeze", "Squeeze", "Cast",
                         "Gather", "Not", "Mod", "ConstantOfShape", "Identity", "Flatten"}
            sh = sum(o["ms"] for o in p["ops"] if o["op"] in shape_ops)
            w("")
            w(f"Shape arithmetic and copies (incl. Identity, Flatten, Gather): {sh:.3f} ms ({sh / total * 100:.0f}%). "
              "Slowest nodes: " + ", ".join(f"`{n['node']}` ({n['op']}, {n['ms']:.3f} ms)" for n in p["top_nodes"][:6]) + ".")
            w("")

    if experiments:
        w("## Experiments")
        w("")
        w("A/B runs of the training graph (or, for MaxPool, the original model) directly on ONNX Runtime: same inputs, "
          "outputs allocated by ORT for both variants, A and B alternating in blocks of 10 runs. Median (min) ms; "
          "B vs A below 0 means B is faster.")
        w("")
        w("| model | batch | threads | experiment | A | B | B vs A | others |")
        w("|---|---:|---:|---|---:|---:|---:|---:|")
        for e in experiments:
            kind = e["experiment"]
            if kind == "pow_grad_exponent_one":
                a, b = e["original"], e["patched"]
                label = (f"Pow rule: `Pow(A, 2−1)` (A) vs `Mul(A, 1)` (B) in {e['patched_nodes']} LayerNorm "
                         f"backward nodes; outputs max diff {e['max_output_difference']:g}")
            elif kind == "maxpool_indices":
                a, b = e["original"], e["patched"]
                label = (f"forward of the original model (A) vs the same with {e['maxpool_nodes']} MaxPool emitting "
                         "Indices (B), as the MaxPool rule makes it in the training graph")
            elif kind == "conv_weight_grad_patches":
                a, b = e["original"], e["patched"]
                product = e.get("product", "dY·Pᵀ")
                label = (f"Conv weight gradient as a Conv with a dY kernel (A, the rule) vs im2col patches P + batched "
                         f"MatMul {product} + ReduceSum (B) in {e['patched_nodes']} convs; gradients max rel diff "
                         f"{e['max_gradient_difference']:.1e}")
            elif kind == "conv_weight_grad_slices":
                a, b = e["original"], e["patched"]
                label = (f"Conv weight gradient as a Conv with a dY kernel (A, the rule) vs one MatMul P·dYᵀ over batch and positions, "
                         f"P stacked from shifted Slices of the padded input (B) in {e['patched_nodes']} convs; gradients max rel diff "
                         f"{e['max_gradient_difference']:.1e}")
            elif kind == "parallel_execution":
                a, b = e["sequential"], e["parallel_inter_op"]
                label = "sequential execution, intra-op threads (A, the toolkit's) vs ORT's parallel mode, inter-op threads (B)"
            elif kind == "baseline_build":
                a, b = e["original"], e["patched"]
                label = f"training graph of the baseline build `{e['baseline']}` (A) vs this build's (B); gradients max rel diff {e['max_gradient_difference']:.1e}"
            elif kind == "intra_op_spinning":
                a, b = e["spinning_on"], e["spinning_off"]
                label = "intra-op spinning on (A, ORT default) vs off (B)"
            else:
                print(f"warning: experiment {kind} has no row format; left out", file=sys.stderr)
                continue
            w(f"| {e['model']} | {e['batch']} | {e['threads']} | {label} | {ms(a['median_ms'])} ({ms(a['min_ms'])}) | "
              f"{ms(b['median_ms'])} ({ms(b['min_ms'])}) | {pct(b['median_ms'], a['median_ms'])} ({pct(b['min_ms'], a['min_ms'])}) | "
              f"{e.get('other_cores', 0):.2f}{BUSY if e.get('other_cores', 0) > QUIET else ''} |")
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
