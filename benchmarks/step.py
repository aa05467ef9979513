"""The model step alone, side by side: one method's training step (forward, loss, backward,
optimizer) on a resident batch, in several numerics/layout variants, timed in interleaved rounds in
one process, and each variant's speed as a ratio to eager fp32 in the contiguous layout.

    python -m benchmarks.step                                     # VICReg, small CNN, Fashion-MNIST 28 px
    python -m benchmarks.step --backbone resnet18 --channels 3 --size 32 --batch 64
    python -m benchmarks.step --variants fp32-contiguous,fp32-channels_last --threads 2

Variants are ``<precision>-<layout>``: precision ``fp32`` or ``bf16`` (autocast of the forward, as
``train.precision=bf16``), layout ``contiguous`` or ``channels_last`` (model and input, as
``train.memory_format``). The input is random data of the stated shape, written with exactly the
variant's strides (one-channel images are ambiguous otherwise: see
``jem.engine.sources.normalise_into``). Every variant gets its own model from the same seed and
its own optimizer (the shipped LARS). Each round runs every variant for ``--steps`` steps, in a
rotating order; reported: median views/s over rounds and the median over rounds of the per-round
ratio to the first variant (which cancels slow drifts in the machine's load). Throughput numbers
on a shared machine are only comparable within one run; the ratios are what to quote.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine
from jem.config import parse_config
from jem.engine.optim import build_optimizer
from jem.engine.sources import normalise_into
from jem.engine.step import train_step
from jem.methods import get_method_class
from jem.methods.base import StepContext

PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")
DEFAULT_VARIANTS = "fp32-contiguous,fp32-channels_last,bf16-channels_last"


def parse_variant(name: str) -> tuple[bool, bool]:
    """``"bf16-channels_last"`` -> (amp, channels_last)."""
    precision, _, layout = name.partition("-")
    if precision not in PRECISIONS or layout not in LAYOUTS:
        raise SystemExit(f"error: variant {name!r}: expected <{'|'.join(PRECISIONS)}>-<{'|'.join(LAYOUTS)}>")
    return precision == "bf16", layout == "channels_last"


class Variant:
    """One method instance, its optimizer and its input views, in one precision and layout."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.amp, channels_last = parse_variant(name)
        cfg = parse_config({"method": args.method, "model": {"backbone": args.backbone, "width": args.width}})
        arch = {"backbone": cfg.model.backbone, "width": cfg.model.width, "in_channels": args.channels,
                "image_size": args.size}
        torch.manual_seed(args.seed)
        self.method = get_method_class(args.method)(arch, list(cfg.model.projector), cfg.method_params)
        if channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.method, cfg.train, cfg.train.lr)
        g = torch.Generator().manual_seed(args.seed)
        zero, one = torch.zeros(args.channels, 1, 1), torch.ones(args.channels, 1, 1)
        n_views = self.method.n_global
        self.views = [normalise_into(torch.randn(args.batch, args.channels, args.size, args.size, generator=g),
                                     zero, one, channels_last) for _ in range(n_views)]
        self.views_per_step = args.batch * n_views
        self.step_no = 0

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` training steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            ctx = StepContext(0, self.step_no, 10**6, 100, indices=torch.arange(self.views[0].shape[0]))
            train_step(self.method, self.method, self.optimizer, self.views, ctx, self.amp)
            self.step_no += 1
        return time.perf_counter() - t0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = [Variant(n, args) for n in names]
    for v in variants:  # warm-up: allocator, oneDNN primitive caches
        v.run(args.warmup)
    secs: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.repeats):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            secs[v.name].append(v.run(args.steps))
    base = names[0]
    rows = []
    for v in variants:
        rows.append({"variant": v.name, "views_per_s": v.views_per_step * args.steps / statistics.median(secs[v.name]),
                     "x_first": statistics.median(b / s for b, s in zip(secs[base], secs[v.name], strict=True))})
    return {"method": args.method, "backbone": args.backbone, "input": [args.batch, args.channels, args.size, args.size],
            "threads": args.threads, "steps": args.steps, "repeats": args.repeats, "baseline": base, "rows": rows,
            "machine": machine(torch.device("cpu"))}


def markdown(result: dict[str, Any]) -> str:
    b, c, s, _ = result["input"]
    out = [f"{result['method']}, {result['backbone']}, batch {b} of {c}x{s}x{s}, {result['threads']} thread(s), "
           f"{result['repeats']} interleaved rounds of {result['steps']} steps", "",
           f"| variant | views/s | x {result['baseline']} (paired) |", "|---|---|---|"]
    out += [f"| {r['variant']} | {r['views_per_s']:.0f} | {r['x_first']:.2f} |" for r in result["rows"]]
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="vicreg")
    ap.add_argument("--backbone", default="small_cnn")
    ap.add_argument("--width", type=int, default=32, help="model.width")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=256, help="images per step (each method takes its views of them)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help=f"comma-separated <precision>-<layout>; the first is the baseline (default {DEFAULT_VARIANTS})")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here (and .md beside it)")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    for n in args.variants.split(","):
        parse_variant(n.strip())  # bad names: one line, before any compute
    result = measure(args)
    table = markdown(result)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
