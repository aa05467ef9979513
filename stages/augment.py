"""Stage `augment`: the view cache (K augmented views per training image, plus local crops)."""

import argparse
from pathlib import Path

from jem.errors import run_main
from jem.sections import load_base_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    ap.add_argument("--out", type=Path, default=Path("data/views"))
    args = ap.parse_args()
    cfg = load_base_config(args.params)  # every section but methods: no method code is a dep
    import os

    import numpy as np
    import torch

    from jem.augment.cache import build_view_cache
    from jem.io import verify_prepared

    # every CPU this process may use (its OpenMP threads wait passively: jem/__init__); not through
    # jem.engine.device, whose imports would make all method code a dependency of this stage
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    verify_prepared(args.prepared)
    src = args.prepared / "pretrain_x.npy"
    if not src.exists():
        src = args.prepared / "train_x.npy"
    if not src.exists():
        raise FileNotFoundError(f"{src} not found: run the prepare stage first")
    images = np.load(src, mmap_mode="r")
    meta = build_view_cache(images, cfg.augment, args.out, cfg.seed)
    print(f"view cache: {meta['num_images']} images x {meta['views_per_image']} views of {meta['size']} px"
          + (f" + {meta['local_crops']} local crops of {meta['local_size']} px" if meta.get("local_crops") else ""))
    if (args.prepared / "train_audio.npy").exists() and meta["views_per_image"] > 0:  # an audio-visual set
        import json

        from jem.augment.audio import build_audio_cache

        rate = int(json.loads((args.prepared / "stats.json").read_text())["audio"]["sample_rate"])
        audio = build_audio_cache(np.load(args.prepared / "train_audio.npy"), rate, cfg.augment.audio,
                                  meta["views_per_image"], args.out, cfg.seed)
        print(f"audio views: {audio['num_recordings']} recordings x {audio['views_per_recording']} log-mel "
              f"spectrograms of {audio['n_mels']} x {audio['frames']}")


if __name__ == "__main__":
    run_main(main)
