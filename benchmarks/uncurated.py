"""Pretraining on an uncurated folder, measured on a labelled set (issue 17: "SEER's recipe and
DeeperCluster finish on the generated uncurated folder and beat their random-init encoders").

The folder (:func:`write_fashion_folder`): Fashion-MNIST *training* images (never the test split)
written as unlabelled files in nested folders with mixed formats, sizes and modes, plus
distractors: random-noise images and corrupt files (empty, truncated, not an image). Pretraining
streams it (``data.pretrain_root``, Ray Data, the engine's real ``pretrain``); evaluation is the
labelled ``dataset=fashion-mnist``: the encoder's kNN and linear-probe top-1 on the test split
against the same seed's random-init encoder (the ``baselines`` stage's ``random_init.*``) and raw
pixels, plus the online validation kNN per epoch (the budget curve; recipes are chosen on it, never
on the test split). One JSON object per run:

    python -m benchmarks.uncurated --method deepercluster --images 3000 --epochs 5 \
        --set train.batch_size=128 --set methods.deepercluster.recluster_every=2 --out /tmp/u.json   # 25 min here
    python -m benchmarks.uncurated --method seer --images 1000 --epochs 2 --set train.batch_size=64   # 15 min here

Evaluation uses 5,000-image stratified subsets of the labelled train and test splits
(``data.max_train``, ``data.max_test``) to fit this machine; ``--set`` overrides them.

``seer`` is the SEER preset of docs/methods.md (SwAV, ``regnet_y_400mf``, projector [512, 512, 128],
2 + 4 multi-crop, sync BN). ``--set key=value`` adds params. Runs in a scratch folder.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

PRESETS: dict[str, dict[str, Any]] = {
    "deepercluster": {"method": "deepercluster"},
    "seer": {"method": "swav", "model.backbone": "regnet_y_400mf", "model.stem": "auto",
             "model.projector": [512, 512, 128], "augment.multicrop.local_crops": 4, "methods.swav.local_crops": 4,
             "train.sync_bn": True, "model.zero_init_residual": True},
}
# the Fashion-MNIST protocol's augmentation (benchmarks/methods.py): natural-image crops and flips
AUGMENT = {"augment.view_a.crop_scale": [0.2, 1.0], "augment.view_b.crop_scale": [0.2, 1.0],
           "augment.view_a.flip_p": 0.5, "augment.view_b.flip_p": 0.5}


def write_fashion_folder(root: Path, n: int, seed: int = 0, noise_fraction: float = 0.03,
                         fashion_root: str = "/usr/share/datasets/fashion-mnist") -> dict[str, int]:
    """``n`` Fashion-MNIST training images (a seeded sample of the 60,000; the test split is never
    read into the folder) as unlabelled files under ``root``, in nested ``camera_<k>/<yyyy-mm>/``
    folders with no class in any name: 80% 28-px greyscale PNG, 10% 56-px RGB JPEG, 10% 36x30-px
    palette PNG; plus ``noise_fraction * n`` random-noise images (20-64 px RGB PNG) and three
    corrupt files. Returns the counts written."""
    from jem.data.idx import load_fashion_mnist

    train_x = load_fashion_mnist(fashion_root).train_x  # (60000, 28, 28, 1) uint8
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train_x))[:n]
    counts = {"fashion": 0, "noise": 0, "corrupt": 0}

    def place(i: int, ext: str) -> Path:
        folder = root / f"camera_{i % 7}" / f"20{18 + i % 5}-{1 + i % 12:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"IMG_{i:06d}.{ext}"

    for i, j in enumerate(pick):
        img = Image.fromarray(train_x[j, :, :, 0], "L")
        kind = i % 10
        if kind < 8:
            img.save(place(i, "png"))
        elif kind == 8:
            img.convert("RGB").resize((56, 56), Image.Resampling.BICUBIC).save(place(i, "jpg"), quality=90)
        else:
            img.resize((36, 30), Image.Resampling.BILINEAR).convert("P").save(place(i, "png"))
        counts["fashion"] += 1
    for k in range(int(round(noise_fraction * n))):
        side = int(rng.integers(20, 65))
        noise = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(noise, "RGB").save(place(n + k, "png"))
        counts["noise"] += 1
    buf = io.BytesIO()
    Image.fromarray(train_x[pick[0], :, :, 0], "L").save(buf, format="PNG")
    for name, blob in (("empty.png", b""), ("truncated.png", buf.getvalue()[:60]),
                       ("notes.jpg", b"not an image" * 20)):
        (root / "camera_0" / name).write_bytes(blob)
        counts["corrupt"] += 1
    return counts


def run(method: str, images: int, epochs: int, seed: int, sets: dict[str, Any], work: Path) -> dict[str, Any]:
    """Write the folder, pretrain on it through the stream, evaluate on Fashion-MNIST's test split."""
    from benchmarks.methods import val_curve
    from jem.augment.cache import build_view_cache
    from jem.baselines import compute_baselines, knn_protocol, linear_protocol
    from jem.config import defaults_dict, parse_config
    from jem.data.stream import stream_manifest
    from jem.engine.run import pretrain
    from jem.evaluate.features import extract_features
    from jem.export import load_encoder
    from jem.prepare import prepare
    from jem.sweep.space import set_dotted

    raw_root = work / "raw"
    t0 = time.perf_counter()
    counts = write_fashion_folder(raw_root, images, seed)
    write_s = time.perf_counter() - t0
    params = {"dataset": "fashion-mnist", "seed": seed, "data.max_train": 5000, "data.max_test": 5000,
              "data.pretrain_root": str(raw_root),
              "train.epochs": epochs, "train.warmup_epochs": 1, "train.batch_size": 256, "train.workers": 1,
              "train.cpus_per_worker": 1, "augment.views_per_image": 0, "eval.monitor_every": 1, "ray.num_cpus": 2,
              "ray.log_to_driver": False} | AUGMENT | PRESETS[method] | sets
    raw = set_dotted(defaults_dict(), params)
    cfg = parse_config(raw)
    prepared, views, live = work / "prepared", work / "views", work / "live"
    prepared.mkdir()
    prepare(cfg, prepared)
    build_view_cache(np.load(prepared / "train_x.npy", mmap_mode="r"), cfg.augment, views, cfg.seed, progress=False)
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps(stream_manifest(str(raw_root))))
    t1 = time.perf_counter()
    summary = pretrain(cfg, raw, prepared, views, work / "encoder", live, str(work / "ray"), progress=False,
                       stream_manifest=manifest)
    pretrain_s = time.perf_counter() - t1
    stats = json.loads((prepared / "stats.json").read_text())
    n_cls = int(stats["num_classes"])
    tx, ty = np.load(prepared / "train_x.npy"), np.load(prepared / "train_y.npy")
    vx, vy = np.load(prepared / "test_x.npy"), np.load(prepared / "test_y.npy")
    net = load_encoder(work / "encoder")
    train_f = extract_features(net, tx, stats["mean"], stats["std"], cfg.eval.batch_size, progress=False)
    test_f = extract_features(net, vx, stats["mean"], stats["std"], cfg.eval.batch_size, progress=False)
    trained = knn_protocol(train_f, ty, test_f, vy, cfg.eval, n_cls, with_all_k=False)
    trained["linear"] = linear_protocol(train_f, ty, test_f, vy, cfg.eval, n_cls)
    base = compute_baselines(prepared, cfg.model, cfg.eval, cfg.seed, progress=False, semi=False)
    return {"method": method, "params": params, "folder": counts, "seed": seed,
            "knn": trained["knn"]["top1"], "linear": trained["linear"]["top1"],
            "random_knn": base["random_init"]["knn"]["top1"], "random_linear": base["random_init"]["linear"]["top1"],
            "pixels_knn": base["pixels"]["knn"]["top1"], "pixels_linear": base["pixels"]["linear"]["top1"],
            "val_curve": val_curve(live), "final_loss": summary["final_loss"],
            "stream_files": summary["stream_files"], "skipped_files": summary["skipped_files"],
            "stream_images": summary["stream_images"], "steps_per_epoch": summary["steps_per_epoch"],
            "views_per_s": summary["views_per_s"], "pretrain_s": round(pretrain_s, 1), "write_s": round(write_s, 1),
            "train_images_eval": int(len(ty)), "test_images": int(len(vy))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=sorted(PRESETS), default="deepercluster")
    ap.add_argument("--images", type=int, default=5000, help="Fashion-MNIST training images in the folder")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more params (YAML values)")
    ap.add_argument("--out", type=Path, help="append the result as one JSON line to this file")
    ap.add_argument("--write-folder", type=Path, metavar="DIR",
                    help="only write the generated folder (--images, --seed) to DIR and exit: for a run through "
                         "dvc exp run -S data.pretrain_root=DIR")
    args = ap.parse_args(argv)
    if args.write_folder:
        if args.write_folder.exists() and any(args.write_folder.iterdir()):
            raise SystemExit(f"error: --write-folder {args.write_folder}: not empty; choose a new folder")
        print(json.dumps(write_fashion_folder(args.write_folder, args.images, args.seed)))
        return 0
    sets = {}
    for pair in args.set:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=0.1")
        sets[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory(prefix="jem-uncurated-") as tmp:
        result = run(args.method, args.images, args.epochs, args.seed, sets, Path(tmp))
    line = json.dumps(result)
    print(line)
    if args.out:
        with args.out.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
