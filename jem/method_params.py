"""Hyperparameters of every registered method: ``methods.<name>.*`` in params.yaml.

This file is deliberately light (no torch) so that params validation and ``jem methods`` are
instant. Each method registers a frozen dataclass here with :func:`register_params`, plus a one-line
description and its paper; the implementation lives in ``jem/methods/<name>.py``.

Optional fields ``optimizer``, ``lr`` and ``weight_decay`` give a method its paper's own optimiser
recipe: they replace ``train.optimizer|lr|weight_decay`` for that method (see
:attr:`jem.config.Config.train_overrides`).

Optional field ``views`` says how many global views per image the method consumes (default 2);
validation checks it against ``augment.views_per_image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jem._schema import OPTIMIZERS, knob

# name -> (params dataclass, description, paper)
METHOD_PARAMS: dict[str, tuple[type, str, str]] = {}
# methods that only work on some backbones -> those backbones; when model.backbone is not among
# them the first one is used (data2vec masks patch tokens, so it needs a transformer)
METHOD_BACKBONES: dict[str, tuple[str, ...]] = {"data2vec": ("vit_tiny",)}


def register_params(name: str, description: str, paper: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in METHOD_PARAMS:
            raise ValueError(f"method params {name!r} registered twice")
        METHOD_PARAMS[name] = (cls, description, paper)
        return cls

    return deco


@register_params("vicreg", "variance-invariance-covariance regularisation of two views",
                 "Bardes, Ponce, LeCun 2022, arXiv:2105.04906")
@dataclass(frozen=True)
class VICRegParams:
    inv_weight: float = knob(25.0, lo=0.0)  # lambda in the paper
    var_weight: float = knob(25.0, lo=0.0)  # mu
    cov_weight: float = knob(1.0, lo=0.0)  # nu
    gamma: float = knob(1.0, gt=0.0)  # target std
    eps: float = knob(1.0e-4, gt=0.0)


@register_params("simclr", "contrastive NT-Xent over two views, negatives from all workers",
                 "Chen, Kornblith, Norouzi, Hinton 2020, arXiv:2002.05709")
@dataclass(frozen=True)
class SimCLRParams:
    temperature: float = knob(0.2, gt=0.0, hi=10.0)


# --- contrastive / information-maximisation params (moco, barlow, wmse) go here ---

@register_params("moco", "InfoNCE of a query against its momentum-encoded key and a queue of past keys",
                 "He et al. 2020, arXiv:1911.05722; Chen, Fan, Girshick, He 2020 (v2), arXiv:2003.04297")
@dataclass(frozen=True)
class MoCoParams:
    temperature: float = knob(0.2, gt=0.0, hi=10.0)  # tau; v2: 0.2
    queue_size: int = knob(1024, lo=1)  # K; paper 65536, <= the training set here (digits: 1347)
    momentum: float = knob(0.99, lo=0.0, hi=1.0)  # m; paper 0.999 (for ~10^5+ steps)
    bn_splits: int = knob(4, lo=1)  # BN groups per worker batch (shuffling BN); paper: 8 GPUs
    symmetric: bool = knob(False)  # also swap the views (MoCo CIFAR demo / v3); paper: False


@register_params("barlow", "cross-correlation of two views' standardised embeddings pushed to identity",
                 "Zbontar, Jing, Misra, LeCun, Deny 2021, arXiv:2103.03230")
@dataclass(frozen=True)
class BarlowParams:
    offdiag_weight: float = knob(5.0e-3, lo=0.0)  # lambda; paper 5e-3 (reference code 0.0051)
    scale_loss: float = knob(0.05, gt=0.0)  # eq. (1): 1.0; reference code 0.024 (8192-d); 0.05 measured best here


@register_params("wmse", "MSE of normalised positives after Cholesky whitening of the batch",
                 "Ermolov, Siarohin, Sangineto, Sebe 2021, arXiv:2007.06346")
@dataclass(frozen=True)
class WMSEParams:
    views: int = knob(4, lo=2, hi=16)  # positives per image d; paper W-MSE 2 and 4 (reference default 4)
    emb_dim: int = knob(32, lo=1)  # whitened embedding width; paper 64 (CIFAR/STL), early reference code 32
    w_size: int = knob(64, lo=2)  # whitening sub-batch; paper 128 (= 2 x emb), must exceed emb_dim
    w_iter: int = knob(1, lo=1, hi=16)  # whitening partitions per step; paper 1
    w_eps: float = knob(1.0e-6, lo=0.0)  # added to the covariance diagonal; reference 0


# --- distillation / clustering params (byol, simsiam, dino, swav) go here ---

@register_params("byol", "online network predicts an EMA target's projection of the other view",
                 "Grill et al. 2020, arXiv:2006.07733")
@dataclass(frozen=True)
class BYOLParams:
    base_momentum: float = knob(0.996, lo=0.0, hi=1.0)  # tau_base (cosine -> 1), as the paper
    pred_hidden: int = knob(1024, lo=1)  # predictor hidden width; paper 4096 = 16 x the 256-d output
    optimizer: str = knob("lars", choices=OPTIMIZERS)  # replaces train.optimizer; paper LARS
    lr: float = knob(3.0, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.2 (x B/256) for 1000 epochs
    weight_decay: float = knob(1.0e-5, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1.5e-6


@register_params("simsiam", "siamese network with a predictor and stop-gradient, no momentum encoder",
                 "Chen, He 2021, arXiv:2011.10566")
@dataclass(frozen=True)
class SimSiamParams:
    pred_hidden: int = knob(64, lo=1)  # predictor bottleneck; paper 512 = 2048 / 4
    optimizer: str = knob("lars", choices=OPTIMIZERS)  # replaces train.optimizer; paper SGD
    lr: float = knob(3.0, gt=0.0, hi=100.0)  # replaces train.lr; paper SGD 0.05 (x B/256)
    weight_decay: float = knob(1.0e-5, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1e-4


@register_params("dino", "self-distillation: student matches a centred, sharpened EMA teacher (multi-crop)",
                 "Caron et al. 2021, arXiv:2104.14294")
@dataclass(frozen=True)
class DINOParams:
    out_dim: int = knob(256, lo=2)  # K output dimensions (prototypes); paper 65536
    student_temp: float = knob(0.1, gt=0.0)  # tau_s
    teacher_temp: float = knob(0.04, gt=0.0)  # tau_t after the warm-up; paper 0.04-0.07
    warmup_teacher_temp: float = knob(0.04, gt=0.0)  # tau_t at epoch 0
    warmup_teacher_temp_epochs: int = knob(0, lo=0)  # paper 30 (of 100-800 epochs)
    center_momentum: float = knob(0.9, lo=0.0, hi=1.0)  # m in eq. (4)
    base_momentum: float = knob(0.996, lo=0.0, hi=1.0)  # teacher EMA lambda at step 0 (cosine -> 1)
    norm_last_layer: bool = knob(True)  # weight-normalised last layer with g fixed to 1
    freeze_last_layer: int = knob(1, lo=0)  # epochs during which the last layer is not updated
    head_bn: bool = knob(False)  # BatchNorm in the head MLP (the reference's use_bn_in_head)
    local_crops: int = knob(0, lo=0, hi=16)  # local views seen by the student (<= augment.multicrop.local_crops)
    optimizer: str = knob("adamw", choices=OPTIMIZERS)  # replaces train.optimizer; paper AdamW
    lr: float = knob(0.001, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.0005 (x B/256)
    weight_decay: float = knob(0.04, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 0.04 -> 0.4 (cosine)


@register_params("swav", "online clustering: swapped prediction of Sinkhorn codes over prototypes",
                 "Caron et al. 2020, arXiv:2006.09882")
@dataclass(frozen=True)
class SwAVParams:
    n_prototypes: int = knob(30, lo=2)  # K; paper 3000 for ImageNet (3x its 1000 classes)
    temperature: float = knob(0.1, gt=0.0)  # tau
    epsilon: float = knob(0.03, gt=0.0)  # entropic regularisation of the codes; paper 0.05
    sinkhorn_iters: int = knob(3, lo=1)
    queue_length: int = knob(0, lo=0)  # global queue of past embeddings for the codes; 0 = off; paper 3840
    epoch_queue_starts: int = knob(15, lo=0)
    freeze_prototypes_iters: int = knob(5, lo=0)  # paper 313 (= one ImageNet epoch at batch 4096)
    local_crops: int = knob(0, lo=0, hi=16)  # local views (<= augment.multicrop.local_crops)


# --- pseudo-label clustering, masking, memory-bank, pretext and generative params (issue 7) ---
# ``views = 1`` (a plain class attribute, not a knob): these methods consume one view per image.

@register_params("deepcluster", "k-means pseudo-labels of all images, re-clustered every few epochs, "
                 "classified by a re-initialised head", "Caron, Bojanowski, Joulin, Douze 2018, arXiv:1807.05520")
@dataclass(frozen=True)
class DeepClusterParams:
    views = 1
    n_clusters: int = knob(100, lo=2)  # k; paper 10000 for ImageNet (10x the classes)
    recluster_every: int = knob(5, lo=1)  # epochs between clusterings; paper 1 (= ~5000 steps; digits: 5 steps)
    pca_dim: int = knob(64, lo=1)  # PCA-whitening dims before k-means; paper 256 (of 4096-d features)
    kmeans_iters: int = knob(20, lo=1)  # Lloyd iterations; reference (faiss) 20
    balanced: bool = knob(True)  # uniform sampling over pseudo-labels, as loss weights; paper: on
    optimizer: str = knob("sgd", choices=OPTIMIZERS)  # replaces train.optimizer; paper SGD
    lr: float = knob(0.1, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.05
    weight_decay: float = knob(5.0e-4, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1e-5


@register_params("sela", "self-labelling: equipartitioned pseudo-labels by Sinkhorn-Knopp over the training "
                 "set, alternating with cross-entropy", "Asano, Rupprecht, Vedaldi 2020, arXiv:1911.05371")
@dataclass(frozen=True)
class SeLaParams:
    views = 1
    n_clusters: int = knob(128, lo=2)  # K; paper 3000 (ImageNet), reference CIFAR 128
    heads: int = knob(1, lo=1, hi=64)  # clustering heads; paper's best 10
    lamb: float = knob(10.0, gt=0.0)  # lambda of P^lambda; reference CIFAR 10, ImageNet 25
    relabel_every: int = knob(5, lo=1)  # epochs between label optimisations; reference CIFAR 1 (digits epochs are 5 steps)
    optimizer: str = knob("sgd", choices=OPTIMIZERS)  # replaces train.optimizer; paper SGD
    lr: float = knob(0.1, gt=0.0, hi=100.0)  # replaces train.lr; paper 0.05
    weight_decay: float = knob(5.0e-4, lo=0.0, hi=1.0)  # replaces train.weight_decay; paper 1e-5


@register_params("data2vec", "masked prediction of the EMA teacher's averaged top-K layer-normalised block "
                 "outputs (ViT)", "Baevski et al. 2022, arXiv:2202.03555")
@dataclass(frozen=True)
class Data2VecParams:
    views = 1
    mask_ratio: float = knob(0.6, gt=0.0, hi=0.95)  # fraction of patch tokens masked; paper 0.6
    top_k: int = knob(6, lo=1)  # teacher blocks averaged; paper 6 (ViT-B, 12 blocks)
    beta: float = knob(2.0, lo=0.0)  # Smooth L1 beta (0 = squared error); reference vision 2
    ema_decay: float = knob(0.99, lo=0.0, hi=1.0)  # teacher EMA at step 0; paper 0.999 (375k steps)
    ema_end_decay: float = knob(0.999, lo=0.0, hi=1.0)  # ... annealed linearly to this; paper 0.9998
    norm_average: bool = knob(False)  # also layer-normalise the averaged target (reference vision config)
    target_norm: str = knob("layer", choices=("layer", "instance"))  # per-block norm: vision layer, speech/2.0 instance
    optimizer: str = knob("adamw", choices=OPTIMIZERS)  # replaces train.optimizer; paper Adam (ViT)
    lr: float = knob(0.001, gt=0.0, hi=100.0)  # replaces train.lr (the usual ViT AdamW lr at batch 256)
    weight_decay: float = knob(0.05, lo=0.0, hi=1.0)  # replaces train.weight_decay (ViT AdamW: 0.05)


@register_params("npid", "instance discrimination against a memory bank of all images' features (softmax or NCE)",
                 "Wu, Xiong, Yu, Lin 2018, arXiv:1805.01978")
@dataclass(frozen=True)
class NPIDParams:
    views = 1
    dim: int = knob(128, lo=1)  # embedding width (linear head); paper 128
    temperature: float = knob(0.07, gt=0.0, hi=10.0)  # tau; paper 0.07
    momentum: float = knob(0.5, lo=0.0, hi=1.0)  # bank update momentum; reference 0.5
    loss: str = knob("softmax", choices=("softmax", "nce"))  # full non-parametric softmax (paper CIFAR) or NCE
    nce_k: int = knob(4096, lo=1)  # noise samples m for NCE; paper 4096
    prox_weight: float = knob(0.0, lo=0.0)  # proximal regularisation lambda; paper studies 0-50, reference 0


@register_params("rotation", "predict which of 0/90/180/270 degrees an image was rotated by",
                 "Gidaris, Singh, Komodakis 2018, arXiv:1803.07728")
@dataclass(frozen=True)
class RotationParams:
    views = 1
    all_rotations: bool = knob(True)  # all four rotations of every image per batch (paper); else one random


@register_params("jigsaw", "predict which permutation (of a fixed maximal-Hamming set) shuffled the tiles",
                 "Noroozi, Favaro 2016, arXiv:1603.09246")
@dataclass(frozen=True)
class JigsawParams:
    views = 1
    grid: int = knob(2, lo=2, hi=4)  # tiles per side; paper 3 (2 for 8x8 images: 4x4 tiles)
    n_permutations: int = knob(24, lo=2)  # permutation set size; paper 1000 (of 9!); 2x2 has 24
    gap: int = knob(-1, lo=-1)  # px cut from each cell (random tile position); -1 -> cell // 7 (paper 75 -> 64)
    tile_norm: bool = knob(True)  # normalise each tile on its own (paper)


@register_params("context", "predict the relative position (8 neighbours) of a second patch",
                 "Doersch, Gupta, Efros 2015, arXiv:1505.05192")
@dataclass(frozen=True)
class ContextParams:
    views = 1
    patch: int = knob(0, lo=0)  # patch px; 0 -> (size - 2 gap) // 3 (8x8: 2); paper 96 on ~400-px images
    gap: int = knob(-1, lo=-1)  # px between patches; -1 -> max(1, size // 16); paper 48
    jitter: int = knob(0, lo=0)  # max px of random shift per patch; paper 7


@register_params("autoencoder", "generative baseline: reconstruct the image from the backbone feature (MSE)",
                 "Hinton, Salakhutdinov 2006, Science 313(5786); review: Bengio, Courville, Vincent 2013, "
                 "arXiv:1206.5538")
@dataclass(frozen=True)
class AutoencoderParams:
    views = 1
    decoder_width: int = knob(64, lo=4)  # channels of the upsampling conv decoder


def describe(name: str) -> dict[str, Any]:
    cls, description, paper = METHOD_PARAMS[name]
    return {"name": name, "description": description, "paper": paper}
