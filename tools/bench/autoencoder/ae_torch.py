#!/usr/bin/python3
"""PyTorch side of the autoencoder benchmarks (tools/bench/autoencoder/README.md).

Run with Debian's python3-torch and the OpenBLAS tuning variables unset in the same command:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/bench/autoencoder/ae_torch.py step \
        --model DIR/autoencoder.onnx --batch 256 --threads 2 --out step.jsonl
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/bench/autoencoder/ae_torch.py train \
        --model DIR/autoencoder.onnx --optimizer kfac-kl|sgd|adamw --lr X --batch 256 --seconds 30 --out run.json

The module is export_autoencoder.Autoencoder with the weights of the ONNX file, so both sides
start from the same point. Loss: binary_cross_entropy_with_logits with mean reduction (as the
toolkit's), every reported loss ×784. Threads: torch.set_num_threads(torch_threads) and
openblas_set_num_threads(blas_threads) (torch's call does not reach OpenBLAS); `step` times both
(1, t) and (t, t) and keeps the faster.

`kfac-kl` is a straightforward K-FAC with the toolkit's conventions (Toolkit/Kfac/README.md):
true Fisher from Bernoulli targets sampled from the model, A = ĀᵀĀ/R, G = N·ĜᵀĜ (optionally on
the first fraction of the batch), running averages ε = min(1−1/k, 0.95), factored Tikhonov damping
with π, explicit inverses every T_inv updates, V = G⁻¹∇W̄A⁻¹, KL clipping and momentum.
"""
import argparse
import ctypes
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_autoencoder as ea  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch_malloc  # noqa: E402

PIXELS = 784
_OPENBLAS = None


def loaded_libs():
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.lower() or "dnnl" in line.lower()}
    return sorted({os.path.realpath(p) for p in paths if p.startswith("/")})


def set_threads(torch_threads, blas_threads):
    global _OPENBLAS
    torch.set_num_threads(torch_threads)
    if _OPENBLAS is None:
        libs = [p for p in loaded_libs() if "openblas" in os.path.basename(p)]
        _OPENBLAS = ctypes.CDLL(libs[0]) if libs else False
    if _OPENBLAS:
        _OPENBLAS.openblas_set_num_threads(int(blas_threads))


def busy_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


class Machine:
    def __init__(self):
        self.b0, self.t0, self.w0 = busy_ticks(), os.times(), time.perf_counter()

    def other_cores(self):
        wall = time.perf_counter() - self.w0
        t1 = os.times()
        own = (t1.user - self.t0.user) + (t1.system - self.t0.system)
        return max(0.0, ((busy_ticks() - self.b0) / os.sysconf("SC_CLK_TCK") - own) / wall)


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_images(data):
    import gzip
    with gzip.open(os.path.join(data, "train-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[4:8], "big")
    return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(n, PIXELS).float() / 255


def model_from(path):
    return ea.load_onnx_weights(ea.build(), path).train()


def stats(ms):
    s = sorted(ms)

    def q(p):
        return s[min(max(math.ceil(p * len(s)) - 1, 0), len(s) - 1)]
    return {"median": q(0.5), "p10": q(0.1), "p90": q(0.9), "min": s[0], "mean": sum(s) / len(s), "n": len(s)}


class Kfac:
    """K-FAC with KL clipping (see the module docstring); all layers of the autoencoder are Linear."""

    def __init__(self, model, lr, damping, kl_clip=1e-3, momentum=0.9, weight_decay=1e-5, inverse_every=20,
                 decay=0.95, fraction=1.0):
        self.layers = list(model.layers)
        self.lr, self.damping, self.kl, self.mom, self.eta = lr, damping, kl_clip, momentum, weight_decay
        self.t_inv, self.decay, self.fraction = inverse_every, decay, fraction
        self.k = 0
        self.A = [None] * len(self.layers)
        self.G = [None] * len(self.layers)
        self.Ainv = [None] * len(self.layers)
        self.Ginv = [None] * len(self.layers)
        self.buf = [None] * len(self.layers)
        self.inputs, self.outputs = [None] * len(self.layers), [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            layer.register_forward_hook(self._hook(i))

    def _hook(self, i):
        def hook(mod, inp, out):
            self.inputs[i] = inp[0].detach()
            self.outputs[i] = out
        return hook

    def step(self, logits):
        """After loss.backward(retain_graph=True): sampled backward, statistics, inverses, update."""
        n = logits.shape[0]
        rows = max(1, math.ceil(self.fraction * n))
        with torch.no_grad():
            t = torch.bernoulli(torch.sigmoid(logits))
        sampled = F.binary_cross_entropy_with_logits(logits[:rows], t[:rows], reduction="sum") / n
        gs = torch.autograd.grad(sampled, [self.outputs[i] for i in range(len(self.layers))])
        self.k += 1
        eps = min(1 - 1 / self.k, self.decay)
        gamma = math.sqrt(self.damping + self.eta)
        with torch.no_grad():
            s = 0.0
            vs = []
            for i, layer in enumerate(self.layers):
                a = self.inputs[i][:rows]
                a = torch.cat([a, a.new_ones(rows, 1)], 1)
                g = gs[i][:rows]
                A = a.t() @ a / rows
                # The Fisher of the loss being trained, as the toolkit's blocks (Toolkit/Kfac/README.md): the
                # mean over the D = n·784 elements divides the per-image-summed loss's G by the 784 outputs.
                G = (n * n / rows) * (g.t() @ g) / logits.shape[1]
                self.A[i] = A if self.A[i] is None else eps * self.A[i] + (1 - eps) * A
                self.G[i] = G if self.G[i] is None else eps * self.G[i] + (1 - eps) * G
                if (self.k - 1) % self.t_inv == 0:
                    dA, dG = self.A[i].shape[0], self.G[i].shape[0]
                    tA, tG = self.A[i].trace() / dA, self.G[i].trace() / dG
                    pi = math.sqrt(tA / tG) if tA > 0 and tG > 0 else 1.0
                    self.Ainv[i] = torch.linalg.inv(self.A[i] + pi * gamma * torch.eye(dA))
                    self.Ginv[i] = torch.linalg.inv(self.G[i] + gamma / pi * torch.eye(dG))
                grad = torch.cat([layer.weight.grad + self.eta * layer.weight, (layer.bias.grad + self.eta * layer.bias)[:, None]], 1)
                v = self.Ginv[i] @ grad @ self.Ainv[i]
                s += (v * grad).sum().item()
                vs.append(v)
            s *= self.lr ** 2
            nu = min(1.0, math.sqrt(self.kl / s)) if s > 0 else 1.0
            for i, layer in enumerate(self.layers):
                v = nu * vs[i]
                self.buf[i] = v if self.buf[i] is None else self.mom * self.buf[i] + v
                layer.weight -= self.lr * self.buf[i][:, :-1]
                layer.bias -= self.lr * self.buf[i][:, -1]
        return nu


def cmd_step(a):
    x = load_images(a.data)[: a.batch]
    rows = []
    settings = [(1, a.threads)] + ([(a.threads, a.threads)] if a.threads > 1 else [])
    for tt, bt in settings:
        set_threads(tt, bt)
        model = model_from(a.model)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def sgd():
            opt.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(x), x)
            loss.backward()
            opt.step()
        m = Machine()
        for _ in range(a.warmup):
            sgd()
        ms = []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            sgd()
            ms.append(1e3 * (time.perf_counter() - t0))
        rows.append({"torch_threads": tt, "blas_threads": bt, "sgd_step": stats(ms), "other_cores": m.other_cores()})
        kmodel = model_from(a.model)
        kfac = Kfac(kmodel, lr=1e-3, damping=1e-2, fraction=a.fraction, weight_decay=a.weight_decay)

        def kstep():
            kmodel.zero_grad(set_to_none=True)
            logits = kmodel(x)
            F.binary_cross_entropy_with_logits(logits, x).backward(retain_graph=True)
            kfac.step(logits)
        for _ in range(20):
            kstep()
        ms = []
        for _ in range(max(40, a.steps // 20 * 20)):
            t0 = time.perf_counter()
            kstep()
            ms.append(1e3 * (time.perf_counter() - t0))
        rows[-1]["kfac_step"] = stats(ms)
        rows[-1]["kfac_fraction"] = a.fraction
    best = min(rows, key=lambda r: r["sgd_step"]["median"])
    out = {"kind": "torch_step", "batch": a.batch, "threads": a.threads, "weight_decay": a.weight_decay, "best": best, "tried": rows,
           "blas": loaded_libs(), "malloc": a.malloc, "torch": torch.__version__, "peak_rss_mib": peak_rss_mib(), "loadavg_end": os.getloadavg()[0]}
    print(json.dumps(out))
    with open(a.out, "a") as f:
        f.write(json.dumps(out) + "\n")


def cmd_train(a):
    set_threads(a.torch_threads, a.threads)
    torch.manual_seed(a.seed)
    x = load_images(a.data)
    n = x.shape[0]
    model = model_from(a.model)
    kfac = None
    if a.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    elif a.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0)
    elif a.optimizer == "kfac-kl":
        opt = None
        kfac = Kfac(model, lr=a.lr, damping=a.damping, kl_clip=a.kl_clip, momentum=a.momentum, inverse_every=a.inverse_every,
                    fraction=a.fraction, weight_decay=a.weight_decay)
    else:
        raise SystemExit(f"--optimizer {a.optimizer}: sgd, adamw or kfac-kl")
    ev_x = x[: a.eval_examples // a.batch * a.batch]

    def evaluate():
        with torch.no_grad():
            return PIXELS * sum(F.binary_cross_entropy_with_logits(model(ev_x[i:i + a.batch]), ev_x[i:i + a.batch]).item()
                                for i in range(0, len(ev_x), a.batch)) / (len(ev_x) // a.batch)
    machine = Machine()
    g = torch.Generator().manual_seed(a.seed)
    evals = [{"update": 0, "wall_s": 0.0, "loss": evaluate()}]
    steps, clock, next_eval, updates, pos, order, stop = [], 0.0, a.eval_every, 0, n, None, "budget"
    while clock < a.seconds and updates < a.max_updates:
        t0 = time.perf_counter()
        if pos + a.batch > n:
            order, pos = torch.randperm(n, generator=g), 0
        xb = x[order[pos:pos + a.batch]]
        pos += a.batch
        model.zero_grad(set_to_none=True)
        logits = model(xb)
        loss = F.binary_cross_entropy_with_logits(logits, xb)
        if kfac:
            loss.backward(retain_graph=True)
            kfac.step(logits)
        else:
            loss.backward()
            opt.step()
        lv = loss.item()
        updates += 1
        clock += time.perf_counter() - t0
        steps.append({"update": updates, "wall_s": clock, "batch_loss": PIXELS * lv})
        if not math.isfinite(lv):
            stop = "diverged"
            break
        if clock >= next_eval or clock >= a.seconds or updates >= a.max_updates:
            evals.append({"update": updates, "wall_s": clock, "loss": evaluate()})
            next_eval = clock + a.eval_every
    out = {"kind": "train", "framework": "pytorch", "optimizer": a.optimizer, "lr": a.lr, "batch": a.batch, "threads": a.threads,
           "torch_threads": a.torch_threads, "damping": a.damping, "statistics_fraction": a.fraction, "weight_decay": a.weight_decay, "seed": a.seed, "inverse_every": a.inverse_every,
           "kl_clip": a.kl_clip, "momentum": a.momentum, "updates": updates, "train_seconds": clock, "stop": stop,
           "eval_examples": len(ev_x), "other_cores": machine.other_cores(), "loadavg_end": os.getloadavg()[0],
           "peak_rss_mib": peak_rss_mib(), "blas": loaded_libs(), "malloc": a.malloc, "evals": evals, "steps": steps}
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(f"pytorch {a.optimizer} lr {a.lr} batch {a.batch}: {updates} updates in {clock:.1f} s, loss {evals[0]['loss']:.2f} -> "
          f"{evals[-1]['loss']:.2f} ({stop}), others {out['other_cores']:.2f} cores, peak RSS {out['peak_rss_mib']:.0f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["step", "train"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="cores: OpenBLAS threads")
    ap.add_argument("--torch-threads", type=int, default=1, help="train: torch's own threads")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--damping", type=float, default=1.0)
    ap.add_argument("--kl-clip", type=float, default=1e-3)
    ap.add_argument("--inverse-every", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--weight-decay", type=float, default=1e-5, help="K-FAC's η (L2 in the preconditioned gradient), as the toolkit's")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-updates", type=int, default=10 ** 9)
    ap.add_argument("--eval-every", type=float, default=2)
    ap.add_argument("--eval-examples", type=int, default=5120)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                    help="keep: glibc keeps freed memory (tools/bench/torch_malloc.py; PyTorch at its best); default: glibc's defaults")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.malloc == "keep" and not torch_malloc.keep_freed_memory():
        sys.exit("mallopt refused the settings of torch_malloc.keep_freed_memory()")
    (cmd_step if a.command == "step" else cmd_train)(a)


if __name__ == "__main__":
    main()
