"""Stage `prepare`: dataset -> train/validation/test arrays, fixed stratified 1%/10% labelled subsets, stats."""

import argparse
from pathlib import Path

from jem.errors import run_main
from jem.io import atomic_dir
from jem.sections import load_base_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = ap.parse_args()
    cfg = load_base_config(args.params)  # every section but methods: no method code is a dep
    from jem.data import check_dataset
    from jem.prepare import prepare

    check_dataset(cfg.dataset, cfg.data.root, test_fraction=cfg.data.test_fraction,
                  group_regex=cfg.data.group_regex, seed=cfg.seed, audio_root=cfg.data.audio_root)
    with atomic_dir(args.out) as tmp:
        stats = prepare(cfg, tmp)
    print(f"prepared {cfg.dataset}: {stats['n_train']} train / {stats['n_val']} validation / "
          f"{stats['n_test']} test images of "
          f"{stats['image_size']}x{stats['image_size']}x{stats['channels']}, {stats['num_classes']} classes"
          + (f"; groups kept whole ({stats['n_groups']['train']} train / {stats['n_groups']['val']} validation)"
             if "n_groups" in stats else ""))
    for note in stats.get("notes", []):
        print(f"note: {note} (recorded in {args.out / 'stats.json'})")


if __name__ == "__main__":
    run_main(main)
