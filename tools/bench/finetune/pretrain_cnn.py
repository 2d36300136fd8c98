#!/usr/bin/python3
"""The starting point of the CNN fine-tune benchmark (issue 7 §2): a small CNN that PyTorch trains on
Fashion-MNIST classes 0-4 only (10-way head from the start), exported to ONNX, plus the fine-tuning data
for all ten classes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 tools/bench/finetune/pretrain_cnn.py OUT_DIR \
        [--data /usr/share/datasets/fashion-mnist] [--epochs 2] [--train-subset 12000] [--seed 0]

Model: [N,1,28,28] in [0,1] -> conv 1->16 3x3 pad 1, ReLU, maxpool 2 -> conv 16->32 3x3 pad 1, ReLU,
maxpool 2 -> flatten -> Linear 1568->10 (logits). Pretraining: SGD lr 0.05, momentum 0.9, batch 64,
on every training image of classes 0-4 (30000), one thread, torch.manual_seed(seed).

Writes to OUT_DIR:
  cnn.onnx                                   opset 17, input 'x' [N,1,28,28], output 'logits' [N,10], dynamic batch
  finetune-{images-idx3,labels-idx1}-ubyte.gz   --train-subset training images of all ten classes (seeded draw
                                             from the 60000; `onnx-kfac train --train/--train-labels`, --scale 255)
  pretrained.json                            test accuracy of the exported model on classes 0-4 and on all ten
The test set is the original t10k files (passed to the CLI as they are).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures"))
from make_default import read_idx, write_idx  # noqa: E402

PRETRAIN_CLASSES = 5
BATCH = 64
LR = 0.05
MOMENTUM = 0.9


class SmallCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


def to_x(images):
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean()) if len(y) else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=12000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    images = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz"))
    test_x = to_x(read_idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")))
    test_y = torch.from_numpy(read_idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))

    # Pretraining: classes 0-4 only, 10-way head.
    keep = labels < PRETRAIN_CLASSES
    x, y = to_x(images[keep]), torch.from_numpy(labels[keep].astype(np.int64))
    model = SmallCnn()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(a.seed)
    start = time.perf_counter()
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"pretrain epoch {epoch + 1}/{a.epochs}: loss {total / len(x):.4f}", file=sys.stderr)
    seconds = time.perf_counter() - start
    model.eval()

    first = test_y < PRETRAIN_CLASSES
    acc_first, acc_all = accuracy(model, test_x[first], test_y[first]), accuracy(model, test_x, test_y)
    path = os.path.join(a.out, "cnn.onnx")
    torch.onnx.export(model, torch.rand(2, 1, 28, 28), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17, do_constant_folding=True)

    # Fine-tuning data: a seeded draw of the training set, all ten classes.
    rng = np.random.default_rng(a.seed)
    pick = np.sort(rng.choice(len(images), size=a.train_subset, replace=False))
    write_idx(os.path.join(a.out, "finetune-images-idx3-ubyte.gz"), images[pick])
    write_idx(os.path.join(a.out, "finetune-labels-idx1-ubyte.gz"), labels[pick])
    info = {"pretrain_classes": PRETRAIN_CLASSES, "pretrain_examples": int(keep.sum()), "pretrain_epochs": a.epochs,
            "pretrain_seconds": seconds, "seed": a.seed, "batch": BATCH, "lr": LR, "momentum": MOMENTUM,
            "parameters": sum(p.numel() for p in model.parameters()), "finetune_examples": a.train_subset,
            "finetune_class_counts": np.bincount(labels[pick], minlength=10).tolist(),
            "test_accuracy_classes_0_4": acc_first, "test_examples_classes_0_4": int(first.sum()),
            "test_accuracy_all": acc_all, "test_examples_all": len(test_y), "torch": torch.__version__}
    json.dump(info, open(os.path.join(a.out, "pretrained.json"), "w"), indent=1)
    print(f"pretrained in {seconds:.1f} s: test accuracy {100 * acc_first:.2f}% on classes 0-4, {100 * acc_all:.2f}% on all ten; wrote {path}")


if __name__ == "__main__":
    main()
