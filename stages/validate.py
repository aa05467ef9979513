"""Stage `validate`: always runs first (always_changed), imports nothing heavy, fails fast.

Catches what DVC cannot: a typo added to params.yaml by hand changes no tracked key, so every
other stage would be skipped silently."""

import argparse

from jem.config import load_config
from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default=None, help="stamp file written on success")
    args = ap.parse_args()
    cfg = load_config(args.params)
    from jem.data import check_dataset

    check_dataset(cfg.dataset, cfg.data.root)
    if args.out:
        with open(args.out, "w") as f:
            f.write("ok\n")
    print(f"params ok: dataset={cfg.dataset} method={cfg.method} seed={cfg.seed}")


if __name__ == "__main__":
    run_main(main)
