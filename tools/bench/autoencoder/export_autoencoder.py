#!/usr/bin/python3
"""The deep autoencoder of Martens & Grosse (2015) / Hinton & Salakhutdinov (2006) on 28x28 images:
784-1000-500-250-30-250-500-1000-784, sigmoid units, linear 30-unit code layer, linear output
(logits; the loss is BCE-with-logits against the input pixels). Exported to ONNX with a dynamic
batch; every optimizer in tools/bench/autoencoder starts from these weights.

    /usr/bin/python3 tools/bench/autoencoder/export_autoencoder.py OUT_DIR [--seed 0] [--init default|sparse]

Writes OUT_DIR/autoencoder.onnx (input 'x' [N, 784], output 'logits' [N, 784]). The PyTorch
benchmarks (ae_torch.py) build the same module and load the same weights from that file, so the
two sides start equal. Initialisation (--init): PyTorch's default nn.Linear init under torch.manual_seed(seed), or
the paper's sparse initialisation (Martens 2010: 15 incoming N(0, 1) weights per unit, biases 0).
"""
import argparse
import os

import torch
import torch.nn as nn

SIZES = [784, 1000, 500, 250, 30]


class Autoencoder(nn.Module):
    def __init__(self):
        super().__init__()
        dims = SIZES + SIZES[-2::-1]          # 784 1000 500 250 30 250 500 1000 784
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.code = len(SIZES) - 2            # index of the 250->30 layer: linear code

    def forward(self, x):
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i != self.code and i != last:
                h = torch.sigmoid(h)
        return h


def build(seed=0, init="default"):
    torch.manual_seed(seed)
    model = Autoencoder()
    if init == "sparse":
        sparse_init(model)
    return model


def sparse_init(model, nonzero=15):
    """Martens (2010)'s sparse initialisation, which Martens & Grosse (2015) use for these
    autoencoders: every unit gets `nonzero` incoming weights drawn from N(0, 1), all other
    weights and every bias 0 (a layer with fewer inputs keeps all of them)."""
    with torch.no_grad():
        for li, layer in enumerate(model.layers):
            out_f, in_f = layer.weight.shape
            w = torch.zeros(out_f, in_f)
            k = min(nonzero, in_f)
            for o in range(out_f):
                w[o, torch.randperm(in_f)[:k]] = torch.randn(k)
            layer.weight.copy_(w)
            # Zero biases, set after the export (zero_biases): identical zero tensors would be merged
            # into one initializer by torch.onnx's deduplication, tying the biases of mirrored layers.
            layer.bias.copy_(torch.arange(1, out_f + 1, dtype=torch.float32) * 1e-3 * (1 + li))


def zero_biases(path):
    import onnx
    from onnx import numpy_helper
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name.endswith(".bias"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 0, t.name))
    onnx.save(m, path)


def load_onnx_weights(model, path):
    """Copies the initializers of an exported autoencoder.onnx into `model` (names match the state dict)."""
    import onnx
    from onnx import numpy_helper
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    state = model.state_dict()
    for k in state:
        state[k] = torch.from_numpy(inits[k].copy())
    model.load_state_dict(state)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=["default", "sparse"], default="default",
                    help="default: PyTorch's nn.Linear init; sparse: Martens (2010), the paper's")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    model = build(a.seed, a.init).eval()
    path = os.path.join(a.out, "autoencoder.onnx")
    torch.onnx.export(model, torch.rand(2, 784), path, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, opset_version=17, do_constant_folding=True)
    if a.init == "sparse":
        zero_biases(path)
    print(path)
    # The machine's MatMul peak in ONNX Runtime (section 4): one 1000x1000 by 1000x1000 MatMul.
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul1000",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1000, 1000]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [1000, 1000])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1000, 1000])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, os.path.join(a.out, "matmul1000.onnx"))


if __name__ == "__main__":
    main()
