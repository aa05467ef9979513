"""Evaluation of the audio-visual methods (avid, avid_cma) on an audio-visual data set.

* ``audio.knn``, ``audio.linear``: the audio encoder's features (un-augmented log-mel
  spectrograms of the recordings, the front end the view cache used, read from its
  ``audio_meta.json``) through the same kNN and linear protocols as the image encoder.
* ``xmodal.a2v.r1|r5``, ``xmodal.v2a.r1|r5``: cross-modal retrieval on the test split in the joint
  embedding space (each encoder's head, L2-normalised, cosine similarity): recall@k = the fraction
  of queries whose k nearest items of the other modality include one of the same class (digit).
  ``a2v``: audio queries, test images retrieved; ``v2a`` the other way round.
* ``random_init.audio.*``, ``random_init.xmodal.*``: the same for a randomly initialised audio
  encoder, image backbone and heads of the same architectures (seeded by ``seed``).
* ``raw.audio.knn``: kNN on the time-averaged standardised log-mel spectrogram (n_mels values per
  recording): what the audio holds before any learning.

For the report (:func:`report_arrays`, saved by the evaluate stage as ``audiovisual.npz`` in its
artefacts folder, tens of KB): a few test recordings' log-mel spectrograms (clean and one augmented
view drawn with the run's ``augment.audio`` recipe: the view cache holds training recordings only)
beside their paired images, and the top-5 cross-modal neighbours of a few audio and image queries.

The exported encoder folder holds ``audio.safetensors`` (audio encoder + head, ``encoder.`` and
``projector.`` prefixes) and its architecture under ``audio`` in ``encoder.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jem.augment.audio import clean_view
from jem.errors import DataError
from jem.io import sha256_file
from jem.sections import AudioConfig

AUDIO_FILE = "audio.safetensors"


def build_audio_nets(meta: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(audio encoder, its head) of the architecture recorded in ``encoder.json["audio"]``."""
    from jem.methods.avid import AudioCNN
    from jem.models import mlp

    enc = AudioCNN(int(meta["width"]))
    return enc, mlp(enc.feat_dim, list(meta["projector"]))


def load_audio_nets(folder: Path) -> tuple[nn.Module, nn.Module]:
    """The exported audio encoder and head (eval mode, CPU), checked against ``encoder.json``'s SHA-256."""
    from safetensors.torch import load_file

    meta = json.loads((folder / "encoder.json").read_text())
    file = folder / AUDIO_FILE
    if "audio" not in meta or not file.is_file():
        raise DataError(f"{folder} holds no audio encoder ({AUDIO_FILE}); pretrain an audio-visual method "
                        "(method: avid | avid_cma)")
    if meta.get("sha256", {}).get(AUDIO_FILE) != sha256_file(file):
        raise DataError(f"{file} does not match its SHA-256 in {folder / 'encoder.json'}; re-run the pretrain stage")
    enc, head = build_audio_nets(meta["audio"])
    tensors = load_file(str(file))
    enc.load_state_dict({k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")})
    head.load_state_dict({k[len("projector."):]: v for k, v in tensors.items() if k.startswith("projector.")})
    return enc.eval(), head.eval()


def spectrograms(audio: np.ndarray, sample_rate: int, frontend: AudioConfig, batch: int = 512) -> torch.Tensor:
    """Un-augmented standardised log-mel spectrograms (N, 1, M, T) of int16 recordings (N, T)."""
    return torch.cat([clean_view(audio[i:i + batch], sample_rate, frontend) for i in range(0, len(audio), batch)])


@torch.no_grad()
def _encode(net: nn.Module, x: torch.Tensor, batch: int, head: nn.Module | None = None) -> torch.Tensor:
    out = []
    for i in range(0, len(x), batch):
        f = net(x[i:i + batch]).flatten(1)
        out.append(head(f) if head is not None else f)
    return torch.cat(out)


def recall_at(queries: torch.Tensor, items: torch.Tensor, q_labels: np.ndarray, i_labels: np.ndarray,
              ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k of cross-modal retrieval: cosine similarity of L2-normalised embeddings; a query is a
    hit at k when one of its k most similar items has its label."""
    sims = F.normalize(queries, dim=1) @ F.normalize(items, dim=1).T  # (Q, I)
    order = sims.argsort(dim=1, descending=True)[:, : max(ks)].numpy()
    same = np.asarray(i_labels)[order] == np.asarray(q_labels)[:, None]  # (Q, max k)
    return {f"r{k}": float(same[:, :k].any(axis=1).mean()) for k in ks}


def cross_modal_neighbours(queries: torch.Tensor | np.ndarray, items: torch.Tensor | np.ndarray, k: int = 5
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k) int64, cosine similarities (Q, k) float32) of each query's ``k`` most similar
    items, best first (the metric of :func:`recall_at`)."""
    from jem.evaluate.artefacts import retrieval

    return retrieval(np.asarray(items), np.asarray(queries), k)


def pick_queries(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` row indices of distinct classes (seeded choice of classes, one seeded row each; fewer
    when there are fewer classes), ordered by class."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    classes = np.sort(rng.choice(np.unique(labels), size=min(n, len(np.unique(labels))), replace=False))
    return np.asarray([int(rng.choice(np.flatnonzero(labels == c))) for c in classes], dtype=np.int64)


N_SPEC, N_XMODAL_QUERIES, XMODAL_K = 4, 4, 5


def report_arrays(spec: torch.Tensor, images: np.ndarray, labels: np.ndarray, za: torch.Tensor, zv: torch.Tensor,
                  view: Any, seed: int) -> dict[str, np.ndarray]:
    """The arrays of the report's audio-visual figures (``audiovisual.npz``), all on the test split:

    * ``spec_idx`` (n,), ``spec_y``, ``spec_x`` (n, H, W, C) the paired images, ``spec_clean`` and
      ``spec_view`` (n, M, T) float16: clean log-mel and one augmented view (``view(idx)``, or
      absent when ``view`` is None);
    * ``a2v_query`` (Q,) audio rows, ``a2v_neigh`` (Q, k) image rows, ``a2v_sim``, ``a2v_query_y``,
      ``a2v_neigh_y``, ``a2v_query_spec`` (Q, M, T), ``a2v_neigh_x`` (Q, k, H, W, C);
    * ``v2a_*`` the same for image queries (``v2a_query_x``) and retrieved recordings
      (``v2a_neigh_spec`` (Q, k, M, T)).

    ``za``, ``zv``: the joint embeddings of the test recordings and images (row i of each is pair i)."""
    sp = spec[:, 0].numpy()  # (N, M, T)
    out: dict[str, np.ndarray] = {}
    idx = pick_queries(labels, N_SPEC, seed)
    out.update(spec_idx=idx, spec_y=labels[idx], spec_x=images[idx], spec_clean=sp[idx].astype(np.float16))
    if view is not None:
        out["spec_view"] = np.asarray(view(idx))[:, 0].astype(np.float16)
    for d, (q, items, seed_d) in {"a2v": (za, zv, seed + 1), "v2a": (zv, za, seed + 2)}.items():
        qi = pick_queries(labels, N_XMODAL_QUERIES, seed_d)
        neigh, sims = cross_modal_neighbours(q[qi], items, XMODAL_K)
        out.update({f"{d}_query": qi, f"{d}_neigh": neigh, f"{d}_sim": sims.astype(np.float32),
                    f"{d}_query_y": labels[qi], f"{d}_neigh_y": labels[neigh]})
        if d == "a2v":
            out.update(a2v_query_spec=sp[qi].astype(np.float16), a2v_neigh_x=images[neigh])
        else:
            out.update(v2a_query_x=images[qi], v2a_neigh_spec=sp[neigh].astype(np.float16))
    return out


def _scores(image_net: nn.Module, image_head: nn.Module, audio_net: nn.Module, audio_head: nn.Module,
            data: dict[str, Any], ecfg: Any, n_cls: int) -> dict[str, Any]:
    from jem.baselines import knn_protocol, linear_protocol
    from jem.evaluate.features import normalise_images

    bs = ecfg.batch_size
    tr_a, te_a = _encode(audio_net, data["train_spec"], bs), _encode(audio_net, data["test_spec"], bs)
    audio = {"knn": knn_protocol(tr_a.numpy(), data["train_y"], te_a.numpy(), data["test_y"], ecfg, n_cls,
                                 with_all_k=False)["knn"],
             "linear": linear_protocol(tr_a.numpy(), data["train_y"], te_a.numpy(), data["test_y"], ecfg, n_cls)}
    za = _encode(audio_net, data["test_spec"], bs, audio_head)
    x = normalise_images(data["test_x"], data["mean"], data["std"], torch.device("cpu"))
    zv = _encode(image_net, x, bs, image_head)
    y = data["test_y"]
    return {"audio": audio, "xmodal": {"a2v": recall_at(za, zv, y, y), "v2a": recall_at(zv, za, y, y)},
            "_embeddings": (za, zv)}


def evaluate_av(prepared: Path, views: Path, encoder_dir: Path, image_net: nn.Module, image_head: nn.Module | None,
                ecfg: Any, seed: int, audio_cfg: AudioConfig | None = None) -> dict[str, Any]:
    """The audio-visual metrics (module docstring) as a nested dict: ``audio``, ``xmodal``, ``raw``
    and ``random_init`` (holding ``audio`` and ``xmodal``), plus ``_report``: the arrays of
    :func:`report_arrays` (not metrics: the caller saves them), with an augmented view drawn with
    ``audio_cfg`` (the run's ``augment.audio``) when given."""
    from jem.baselines import knn_protocol

    if image_head is None:
        raise DataError(f"{encoder_dir} has no projector head: cross-modal retrieval needs the joint embedding")
    stats = json.loads((prepared / "stats.json").read_text())
    meta = json.loads((views / "audio_meta.json").read_text())
    frontend = AudioConfig(**meta["frontend"])
    rate = int(meta["sample_rate"])
    data = {"train_spec": spectrograms(np.load(prepared / "train_audio.npy"), rate, frontend),
            "test_spec": spectrograms(np.load(prepared / "test_audio.npy"), rate, frontend),
            "train_y": np.load(prepared / "train_y.npy"), "test_y": np.load(prepared / "test_y.npy"),
            "test_x": np.load(prepared / "test_x.npy"), "mean": stats["mean"], "std": stats["std"]}
    n_cls = int(stats["num_classes"])
    audio_net, audio_head = load_audio_nets(encoder_dir)
    out = _scores(image_net, image_head, audio_net, audio_head, data, ecfg, n_cls)
    za, zv = out.pop("_embeddings")
    test_audio = np.load(prepared / "test_audio.npy", mmap_mode="r")

    def view(idx: np.ndarray) -> torch.Tensor:
        from jem.augment.audio import audio_view

        assert audio_cfg is not None
        g = torch.Generator().manual_seed(seed)
        return audio_view(np.asarray(test_audio[idx]), rate, audio_cfg, g)

    report = report_arrays(data["test_spec"], data["test_x"], np.asarray(data["test_y"]), za, zv,
                           view if audio_cfg is not None else None, seed)
    enc_meta = json.loads((encoder_dir / "encoder.json").read_text())
    torch.manual_seed(seed)
    from jem.models import build_backbone

    rand_image, _ = build_backbone(enc_meta["arch"])
    rand_image_head = _fresh_like(image_head)
    rand_audio, rand_audio_head = build_audio_nets(enc_meta["audio"])
    out["random_init"] = _scores(rand_image.eval(), rand_image_head.eval(), rand_audio.eval(), rand_audio_head.eval(),
                                 data, ecfg, n_cls)
    out["random_init"].pop("_embeddings")
    raw_tr, raw_te = data["train_spec"].mean(dim=3).flatten(1), data["test_spec"].mean(dim=3).flatten(1)  # (N, M)
    out["raw"] = {"audio": {"knn": knn_protocol(raw_tr.numpy(), data["train_y"], raw_te.numpy(), data["test_y"], ecfg,
                                                n_cls, with_all_k=False)["knn"]}}
    out["_report"] = report
    return out


def _fresh_like(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every parameter re-initialised (``reset_parameters``), BN statistics reset."""
    import copy

    fresh = copy.deepcopy(module)
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return fresh
