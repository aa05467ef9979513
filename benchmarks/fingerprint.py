"""Numerics fingerprint of every registered method: a refactor must leave it bit-identical.

For each method: its defaults on a 1-channel 8x8 image (digits' shape), seed 0, one epoch hook on
fixed images, then four optimizer steps on fixed random views through the engine's own
``train_step``. Prints (and with ``--out`` writes) the loss of every step and a float64 checksum of
the parameters after the last one, as exact hex floats. Compare two commits with ``--compare``:

    python -m benchmarks.fingerprint --out /tmp/before.json     # on the old commit
    python -m benchmarks.fingerprint --compare /tmp/before.json # on the new one: exit 1 on any change
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

B, STEPS = 64, 4


def fingerprint(name: str) -> dict[str, object]:
    from jem.config import parse_config
    from jem.engine.loop import build_method
    from jem.engine.optim import build_optimizer
    from jem.engine.step import train_step
    from jem.methods import get_method_class
    from jem.methods.base import EpochData, StepContext

    raw: dict[str, object] = {"method": name}
    if get_method_class(name).n_audio:  # audio-visual methods need their data set (never read here)
        raw.update(dataset="av-digits", data={"audio_root": "unused"})
    cfg = parse_config(raw)
    torch.manual_seed(0)
    size = 8
    method = build_method(cfg, in_channels=1, image_size=size)
    opt = build_optimizer(method, cfg.train, 0.05)
    images = np.random.default_rng(0).integers(0, 256, size=(256, size, size, 1), dtype=np.uint8)
    method.on_epoch_start(EpochData(epoch=0, images=images, mean=[0.5], std=[0.25],
                                    device=torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(STEPS):
        views = ([torch.randn(B, 1, size, size, generator=g) for _ in range(method.n_global)]
                 + [torch.randn(B, 1, size // 2, size // 2, generator=g) for _ in range(method.n_local)]
                 + [torch.randn(B, 1, 40, 63, generator=g) for _ in range(method.n_audio)])  # log-mel views
        ctx = StepContext(epoch=0, step=step, total_steps=STEPS, steps_per_epoch=STEPS,
                          indices=torch.arange(step * B, (step + 1) * B) % 256)
        losses.append(float(train_step(method, method, opt, views, ctx)).hex())
    checksum = float(sum(p.detach().double().sum() for p in method.parameters()))
    return {"losses": losses, "param_sum": checksum.hex()}


def main(argv: list[str] | None = None) -> int:
    from jem.methods import method_names

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the fingerprints to this JSON file")
    ap.add_argument("--compare", help="compare against fingerprints written earlier; exit 1 on a change")
    ap.add_argument("--methods", help="comma-separated subset (default: every registered method)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = a.methods.split(",") if a.methods else method_names()
    got = {}
    for n in names:
        got[n] = fingerprint(n)
        print(n, got[n]["losses"][-1], got[n]["param_sum"], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(got, f, indent=1)
    if a.compare:
        old = json.load(open(a.compare))
        both = [n for n in got if n in old]
        bad = [n for n in both if old[n] != got[n]]
        missing = [] if a.methods else sorted(set(old) - set(got))  # a --methods subset leaves the rest out
        new = sorted(set(got) - set(old))
        print(f"{len(both) - len(bad)} of {len(both)} methods bit-identical; changed: {bad or 'none'}; "
              f"gone: {missing or 'none'}; new (nothing to compare): {new or 'none'}")
        return 1 if bad or missing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
