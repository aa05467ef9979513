"""What the report shows besides numbers, computed where the encoder is at hand (the evaluate step)
and handed over as small arrays: augmented test pairs (alignment, cross-correlation), the t-SNE map,
nearest-neighbour retrieval and a sample of the views the method was trained on.

Every function is deterministic given its ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from jem.config import AugmentConfig, ViewConfig

MAX_VIEW_COLUMNS = 8  # global views shown per image in the views grid
MAX_LOCAL_COLUMNS = 6  # local crops shown per image


def augmented_pairs(images: np.ndarray, view_a: ViewConfig, view_b: ViewConfig, seed: int,
                    chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """One ``view_a`` and one ``view_b`` view of each image: uint8 (N, H, W, C) -> two uint8 arrays
    of the same shape (views at the input height, rounded to uint8 like the view cache)."""
    from jem.augment.recipe import augment_batch, to_uint8_nhwc

    n, h = images.shape[0], images.shape[1]
    gen = torch.Generator().manual_seed(seed)
    out_a, out_b = np.empty_like(images), np.empty_like(images)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk]))  # (B, H, W, C)
        out_a[start : start + chunk] = to_uint8_nhwc(augment_batch(x, view_a, h, gen)).numpy()
        out_b[start : start + chunk] = to_uint8_nhwc(augment_batch(x, view_b, h, gen)).numpy()
    return out_a, out_b


def pick_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` distinct row indices, seeded: one per class first (classes in ascending order), then
    random others if there are fewer classes than ``n``. Returns fewer when ``len(labels) < n``."""
    labels = np.asarray(labels).reshape(-1)
    perm = np.random.default_rng(seed).permutation(len(labels))
    chosen: list[int] = []
    for cls in np.unique(labels):
        if len(chosen) == n:
            break
        chosen.append(int(perm[labels[perm] == cls][0]))
    taken = set(chosen)
    rest = [int(i) for i in perm if int(i) not in taken]
    return np.asarray(chosen + rest[: n - len(chosen)], dtype=np.int64)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted seeded subset of ``range(n)`` of size ``min(n, max_points)`` (all rows if n fits)."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:max_points])


def tsne_map(features: np.ndarray, max_points: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE (van der Maaten & Hinton, 2008) of L2-normalised features (N, D).

    On normalised rows the Euclidean distance is a monotone function of the cosine similarity the
    kNN protocol uses. At most ``max_points`` rows (a seeded subset); perplexity ``min(30, (M-1)/3)``,
    PCA initialisation, automatic learning rate. Returns ``(xy (M, 2) float32, row indices (M,))``.
    """
    from sklearn.manifold import TSNE

    idx = subsample(len(features), max_points, seed)
    z = F.normalize(torch.from_numpy(np.asarray(features, dtype=np.float32)[idx]), dim=1).numpy()  # (M, D)
    if len(idx) < 4:
        raise ValueError(f"t-SNE needs at least 4 points; got {len(idx)}")
    tsne = TSNE(n_components=2, perplexity=min(30.0, (len(idx) - 1) / 3.0), init="pca",
                learning_rate="auto", random_state=seed)
    return tsne.fit_transform(z).astype(np.float32), idx


def retrieval(train_feats: np.ndarray, query_feats: np.ndarray, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` training neighbours of each query by cosine similarity (the kNN protocol's metric).

    Returns ``(indices (Q, k) int64, similarities (Q, k) float32)``, best first.
    """
    train = F.normalize(torch.from_numpy(np.asarray(train_feats, dtype=np.float32)), dim=1)  # (N, D)
    query = F.normalize(torch.from_numpy(np.asarray(query_feats, dtype=np.float32)), dim=1)  # (Q, D)
    sims, idx = (query @ train.T).topk(min(k, train.shape[0]), dim=1)  # (Q, k)
    return idx.numpy().astype(np.int64), sims.numpy()


def view_samples(prepared: Path, views: Path | None, augment: AugmentConfig | None, n: int = 8,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Originals and the views the method saw for ``n`` pretraining images.

    From the view cache when it holds views (``originals`` (n, H, W, C), ``views`` (n, K', S, S, C)
    with K' = min(K, 8), ``locals`` (n, L', s, s, C) with L' = min(L, 6) or absent, ``source`` =
    "cache"); with ``views_per_image: 0`` (on-device augmentation) four views are rendered here with
    the same alternating ``view_a`` / ``view_b`` recipes (``source`` = "rendered"). Empty dict when
    neither is possible.
    """
    from jem.augment.cache import ViewCache

    src = prepared / "pretrain_x.npy"
    labelled = not src.exists()
    images = np.load(prepared / "train_x.npy" if labelled else src, mmap_mode="r")
    idx = (pick_per_class(np.load(prepared / "train_y.npy"), n, seed) if labelled
           else subsample(len(images), n, seed))
    out: dict[str, np.ndarray] = {"originals": np.asarray(images[idx])}
    cache = ViewCache(views) if views is not None and (views / "meta.json").exists() else None
    if cache is not None and cache.globals is not None and len(cache) == len(images):
        out["views"] = np.asarray(cache.globals[idx, :MAX_VIEW_COLUMNS])
        if cache.locals is not None:
            out["locals"] = np.asarray(cache.locals[idx, :MAX_LOCAL_COLUMNS])
        out["source"] = np.array("cache")
    elif augment is not None:
        from jem.augment.recipe import augment_batch, to_uint8_nhwc

        gen = torch.Generator().manual_seed(seed)
        x = torch.from_numpy(np.ascontiguousarray(out["originals"]))
        size = x.shape[1]
        rendered = [to_uint8_nhwc(augment_batch(x, augment.view_a if k % 2 == 0 else augment.view_b, size, gen))
                    for k in range(4)]
        out["views"] = torch.stack(rendered, dim=1).numpy()  # (n, 4, S, S, C)
        out["source"] = np.array("rendered")
    else:
        return {}
    return out
