"""Where a random-init torchvision backbone loses its input's geometry, stage by stage, with
BatchNorm in eval mode (running statistics: what evaluation sees) and in train mode (batch
statistics: what every training step sees), with and without ``model.zero_init_residual``.

    python -m benchmarks.blocks --backbone regnet_y_400mf --dataset fashion-mnist

Weighted kNN top-1 (k 20, temperature 0.07) of each stage's L2-normalised output: a bank of 1,000
training images against 500 other training images as queries (the test split is never read).
Seconds on a CPU. Prints one table (markdown).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import torch

from benchmarks.common import load_data
from jem.evaluate.features import normalise_images
from jem.evaluate.knn import knn_eval
from jem.models import build_backbone
from jem.models.tv import resolve_stem


def stage_outputs(net: torch.nn.Module, x: torch.Tensor, train: bool) -> dict[str, np.ndarray]:
    """Output of each top-level stage (torchvision RegNet: stem, trunk blocks; ResNet: layers) for ``x``."""
    if hasattr(net, "trunk_output"):  # RegNet
        parts = [("stem", net.stem)] + [(f"stage {i + 1}", m) for i, m in enumerate(net.trunk_output.children())]
    else:  # ResNet family
        parts = [(f"stage {i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    outs: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: outs.__setitem__(n, out.flatten(1).numpy()))
             for n, m in parts]
    net.train(train)
    with torch.no_grad():
        outs["features"] = net(x).flatten(1).numpy()
    for h in hooks:
        h.remove()
    return outs


def knn(f: np.ndarray, y: np.ndarray, n_bank: int, classes: int) -> float:
    """knn_eval's weighted vote (it L2-normalises): the first ``n_bank`` rows as the bank, the rest as queries."""
    return float(knn_eval(f[:n_bank], y[:n_bank], f[n_bank:], y[n_bank:], 20, 0.07, classes)["top1"])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.blocks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", default="regnet_y_400mf")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--stem", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    d = load_data(args.dataset, 0, 0)
    assert d.train_y is not None, f"{args.dataset} has no labels"
    pick = np.random.default_rng(args.seed).permutation(len(d.train_x))[:1500]
    x = normalise_images(d.train_x[pick], d.mean, d.std)
    y = d.train_y[pick]
    size = int(x.shape[-1])
    stem = resolve_stem(args.backbone, args.stem, size)
    rows: list[dict[str, Any]] = []
    for zero in (False, True):
        torch.manual_seed(args.seed)
        net, _ = build_backbone({"backbone": args.backbone, "width": 32, "in_channels": int(x.shape[1]),
                                 "image_size": size, "stem": stem, "zero_init_residual": zero})
        for train in (False, True):
            outs = stage_outputs(net, x, train)
            rows.append({"zero_init_residual": zero, "bn": "train" if train else "eval",
                         **{k: knn(v, y, 1000, d.num_classes) for k, v in outs.items()}})
    cols = [k for k in rows[0] if k not in ("zero_init_residual", "bn")]
    print(f"{args.backbone} (stem {stem}) at random init on {args.dataset} ({size} px): kNN top-1 of each stage's "
          f"output, 1,000 training images as the bank, 500 others as queries, seed {args.seed}\n")
    print("| zero_init_residual | BatchNorm | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {str(r['zero_init_residual']).lower()} | {r['bn']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
