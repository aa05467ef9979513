"""The model step alone, side by side: one method's training step (forward, loss, backward,
optimizer) on a resident batch, in several numerics/layout/compile variants, timed in interleaved
rounds in one process, and each variant's speed as a ratio to the first variant (by default eager
fp32 in the contiguous layout).

    python -m benchmarks.step                                     # VICReg, small CNN, Fashion-MNIST 28 px
    python -m benchmarks.step --backbone resnet18 --channels 3 --size 32 --batch 64
    python -m benchmarks.step --variants fp32-contiguous,fp32-channels_last --threads 2
    python -m benchmarks.step --variants fp32-contiguous,fp32-contiguous-step,bf16-channels_last-step
    python -m benchmarks.step --profile 3                         # where the first variant's time goes

Variants are ``<precision>-<layout>[-<compile>]``: precision ``fp32`` or ``bf16`` (autocast of the
forward, as ``train.precision=bf16``), layout ``contiguous`` or ``channels_last`` (model and input,
as ``train.memory_format``), and optionally ``backbone`` or ``step``, what ``torch.compile`` covers
(as ``train.compile``; see :mod:`jem.engine.step`). The input is random data of the stated shape,
written with exactly the variant's strides (one-channel images are ambiguous otherwise: see
``jem.engine.sources.normalise_into``). Every variant gets its own model from the same seed and
its own optimizer (the shipped LARS). Each round runs every variant for ``--steps`` steps, in a
rotating order; reported: median views/s over rounds and the median over rounds of the per-round
ratio to the first variant (which cancels slow drifts in the machine's load). Throughput numbers
on a shared machine are only comparable within one run; the ratios are what to quote.

A compiled variant's first step compiles it (inductor: generated C++ built with the system
compiler); its seconds are reported as ``compile_s`` (first step minus one ordinary step), never
part of the timed rounds. Inductor caches compiled kernels on disk (``TORCHINDUCTOR_CACHE_DIR``,
default under /tmp), so a repeated shape compiles faster; ``--cold-compile`` points the cache at an
empty folder to measure what a first run pays.

``--profile N`` runs N steps of the first variant under ``torch.profiler`` after the warm-up and
prints its time per operator group (convolution forward/backward, batch norm, ReLU, linear layers,
optimizer, the rest) before the rounds. For VICReg with the small CNN at 28 px (batch 128, 1 thread,
eager fp32 contiguous, machine A; ``--batch 128 --profile 2``) the step splits: convolution
backward 52%, convolution forward 26%, batch norm 14% (forward 7.3, backward 6.5), ReLU 2%, copies
2%, the linear layers 0.3%, the LARS update 0.2%, the rest (the VICReg loss's small ops, allocation,
autograd bookkeeping) 3%. Compilation can fuse batch norm, ReLU, copies and the loss (~20%) but not
the convolutions, which stay oneDNN calls: the numerics (bf16) and the layout (channels_last) are
where most of a 2x has to come from.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import machine
from jem.config import parse_config
from jem.engine.optim import build_optimizer
from jem.engine.sources import normalise_into
from jem.engine.step import compile_method, train_step
from jem.methods import get_method_class
from jem.methods.base import StepContext

PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")
COMPILES = ("backbone", "step")
DEFAULT_VARIANTS = "fp32-contiguous,fp32-channels_last,bf16-channels_last,fp32-contiguous-step,bf16-channels_last-step"
# operator groups of --profile: (group, predicate on the aten op name), first match wins
GROUPS = (("convolution backward", lambda n: n == "aten::convolution_backward"),
          ("convolution forward", lambda n: n in ("aten::mkldnn_convolution", "aten::_convolution_pointwise",
                                                  "aten::convolution_overrideable", "aten::_nnpack_spatial_convolution")),
          ("batch norm forward", lambda n: n in ("aten::native_batch_norm", "aten::_native_batch_norm_legit",
                                                 "aten::_native_batch_norm_legit_no_training")),
          ("batch norm backward", lambda n: n == "aten::native_batch_norm_backward"),
          ("ReLU forward + backward", lambda n: n in ("aten::relu", "aten::relu_", "aten::clamp_min",
                                                      "aten::clamp_min_", "aten::threshold_backward")),
          ("linear layers (mm, addmm)", lambda n: n in ("aten::mm", "aten::addmm", "aten::bmm")),
          ("copies and layout changes", lambda n: n in ("aten::copy_", "aten::clone", "aten::contiguous")))


def parse_variant(name: str) -> tuple[bool, bool, str]:
    """``"bf16-channels_last-step"`` -> (amp, channels_last, train.compile mode)."""
    parts = name.split("-")
    if len(parts) == 2:
        parts.append("none")
    if (len(parts) != 3 or parts[0] not in PRECISIONS or parts[1] not in LAYOUTS
            or parts[2] not in ("none", *COMPILES) or name.endswith("-none")):
        raise SystemExit(f"error: variant {name!r}: expected <{'|'.join(PRECISIONS)}>-<{'|'.join(LAYOUTS)}>"
                         f"[-<{'|'.join(COMPILES)}>]")
    return parts[0] == "bf16", parts[1] == "channels_last", parts[2]


class Variant:
    """One method instance, its optimizer and its input views, in one precision, layout and compile mode."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.amp, channels_last, compile_mode = parse_variant(name)
        cfg = parse_config({"method": args.method, "model": {"backbone": args.backbone, "width": args.width}})
        arch = {"backbone": cfg.model.backbone, "width": cfg.model.width, "in_channels": args.channels,
                "image_size": args.size}
        torch.manual_seed(args.seed)
        self.method = get_method_class(args.method)(arch, list(cfg.model.projector), cfg.method_params)
        if channels_last:
            self.method = self.method.to(memory_format=torch.channels_last)
        self.model, self.compiled = compile_method(self.method, compile_mode)
        self.optimizer = build_optimizer(self.method, cfg.train, cfg.train.lr)
        g = torch.Generator().manual_seed(args.seed)
        zero, one = torch.zeros(args.channels, 1, 1), torch.ones(args.channels, 1, 1)
        n_views = self.method.n_global
        self.views = [normalise_into(torch.randn(args.batch, args.channels, args.size, args.size, generator=g),
                                     zero, one, channels_last) for _ in range(n_views)]
        self.views_per_step = args.batch * n_views
        self.step_no = 0
        self.compile_s = 0.0

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` training steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            ctx = StepContext(0, self.step_no, 10**6, 100, indices=torch.arange(self.views[0].shape[0]))
            train_step(self.model, self.method, self.optimizer, self.views, ctx, self.amp)
            self.step_no += 1
        return time.perf_counter() - t0

    def warm_up(self, steps: int) -> None:
        """``steps`` untimed steps (allocator, oneDNN primitive caches); for a compiled variant the
        first one compiles, and its excess over an ordinary step is recorded as ``compile_s``."""
        first = self.run(1)
        rest = [self.run(1) for _ in range(max(1, steps - 1))]
        if self.compiled != "none":
            self.compile_s = max(0.0, first - statistics.median(rest))


def profile_groups(v: Variant, steps: int) -> dict[str, Any]:
    """Self CPU time of ``steps`` steps of ``v`` under torch.profiler, by operator group (:data:`GROUPS`),
    plus the optimizer's step as a whole (its own ops are not in the other groups)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        v.run(steps)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    groups = {g: 0.0 for g, _ in GROUPS}
    optimizer = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#"))
    for e in events:
        for g, match in GROUPS:
            if match(e.key):
                groups[g] += e.self_cpu_time_total
                break
    # the optimizer's own ops (torch._foreach_*, norms, where) match none of the groups: no double count
    groups["optimizer (LARS step)"] = optimizer
    groups["the rest (loss maths, allocation, autograd bookkeeping)"] = total - sum(groups.values())
    return {"variant": v.name, "steps": steps, "total_s": total / 1e6,
            "share": {g: t / total for g, t in groups.items()}}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    variants = [Variant(n, args) for n in names]
    for v in variants:
        v.warm_up(args.warmup)
    prof = profile_groups(variants[0], args.profile) if args.profile else None
    secs: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(args.repeats):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            secs[v.name].append(v.run(args.steps))
    base = names[0]
    rows = []
    for v in variants:
        rows.append({"variant": v.name, "views_per_s": v.views_per_step * args.steps / statistics.median(secs[v.name]),
                     "x_first": statistics.median(b / s for b, s in zip(secs[base], secs[v.name], strict=True)),
                     "compiled": v.compiled, "compile_s": round(v.compile_s, 1)})
    out = {"method": args.method, "backbone": args.backbone, "input": [args.batch, args.channels, args.size, args.size],
           "threads": args.threads, "steps": args.steps, "repeats": args.repeats, "baseline": base, "rows": rows,
           "cold_compile": args.cold_compile, "machine": machine(torch.device("cpu"))}
    if prof is not None:
        out["profile"] = prof
    return out


def markdown(result: dict[str, Any]) -> str:
    b, c, s, _ = result["input"]
    cache = "cold inductor cache" if result["cold_compile"] else "inductor's on-disk cache as found"
    out = [f"{result['method']}, {result['backbone']}, batch {b} of {c}x{s}x{s}, {result['threads']} thread(s), "
           f"{result['repeats']} interleaved rounds of {result['steps']} steps; compile s: first step minus an "
           f"ordinary one, {cache}", "",
           f"| variant | views/s | x {result['baseline']} (paired) | compile s |", "|---|---|---|---|"]
    out += [f"| {r['variant']} | {r['views_per_s']:.0f} | {r['x_first']:.2f} | "
            f"{r['compile_s'] if r['compiled'] != 'none' else '-'} |" for r in result["rows"]]
    if "profile" in result:
        p = result["profile"]
        out += ["", f"Where {p['variant']}'s time goes ({p['steps']} steps, {p['total_s']:.2f} s of self CPU time):",
                "", "| operator group | share |", "|---|---|"]
        out += [f"| {g} | {100 * share:.1f}% |" for g, share in p["share"].items()]
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
                    help="comma-separated <precision>-<layout>[-<compile>] (fp32|bf16, contiguous|channels_last, "
                         f"backbone|step); the first is the baseline (default {DEFAULT_VARIANTS})")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed steps per variant before the rounds (at least 2: a compiled variant's first compiles)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="profile N steps of the first variant after the warm-up; prints time per operator group")
    ap.add_argument("--cold-compile", action="store_true",
                    help="compile into an empty inductor cache (what a first run pays); default: the cache as found")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here (and .md beside it)")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    for n in args.variants.split(","):
        parse_variant(n.strip())  # bad names: one line, before any compute
    if args.warmup < 2:
        raise SystemExit("error: --warmup must be at least 2 (a compiled variant's first step compiles)")
    if args.cold_compile:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="jem-inductor-")
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
