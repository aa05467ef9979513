"""Stage `validate`: always runs first (always_changed), fails fast, before any data or training work.

Catches what DVC cannot: a typo added to params.yaml by hand changes no tracked key, so every
other stage would be skipped silently. It imports the method registry (and with it torch: a few
seconds) because every method's params and checks live in its module."""

import argparse
from pathlib import Path

import yaml

from jem.config import load_config, method_notes
from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="stamp file written on success")
    args = ap.parse_args()
    cfg = load_config(args.params)
    from jem.data import check_dataset

    check_dataset(cfg.dataset, cfg.data.root, test_fraction=cfg.data.test_fraction,
                  group_regex=cfg.data.group_regex, seed=cfg.seed, audio_root=cfg.data.audio_root)
    from jem.preflight import check_run  # params against the data sizes, the backbone and the CPUs

    notes = check_run(cfg)
    if args.out:
        with open(args.out, "w") as f:
            f.write("ok\n")
    print(f"params ok: dataset={cfg.dataset} method={cfg.method} seed={cfg.seed}")
    for note in notes:
        print(note)
    for note in method_notes(cfg, yaml.safe_load(Path(args.params).read_text())):
        print(note)

if __name__ == "__main__":
    run_main(main)
