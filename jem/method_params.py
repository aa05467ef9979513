"""Hyperparameters of every registered method: ``methods.<name>.*`` in params.yaml.

This file is deliberately light (no torch) so that params validation and ``jem methods`` are
instant. Each method registers a frozen dataclass here with :func:`register_params`, plus a one-line
description and its paper; the implementation lives in ``jem/methods/<name>.py``.

Optional field ``views`` says how many global views per image the method consumes (default 2);
validation checks it against ``augment.views_per_image``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jem._schema import knob

# name -> (params dataclass, description, paper)
METHOD_PARAMS: dict[str, tuple[type, str, str]] = {}


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
    scale_loss: float = knob(1.0, gt=0.0)  # early reference code: 0.024


@register_params("wmse", "MSE of normalised positives after Cholesky whitening of the batch",
                 "Ermolov, Siarohin, Sangineto, Sebe 2021, arXiv:2007.06346")
@dataclass(frozen=True)
class WMSEParams:
    views: int = knob(4, lo=2, hi=16)  # positives per image d; paper W-MSE 2 and 4 (reference default 4)
    emb_dim: int = knob(64, lo=1)  # whitened embedding width; paper 64 (CIFAR/STL)
    w_size: int = knob(128, lo=2)  # whitening sub-batch; paper 128, must exceed emb_dim
    w_iter: int = knob(1, lo=1, hi=16)  # whitening partitions per step; paper 1
    w_eps: float = knob(1.0e-6, lo=0.0)  # added to the covariance diagonal; reference 0


# --- distillation / clustering params (byol, simsiam, dino, swav) go here ---

@register_params("byol", "online network predicts an EMA target's projection of the other view",
                 "Grill et al. 2020, arXiv:2006.07733")
@dataclass(frozen=True)
class BYOLParams:
    base_momentum: float = knob(0.99, lo=0.0, hi=1.0)  # tau_base; paper 0.996 (for 300+ epochs)
    pred_hidden: int = knob(256, lo=1)  # predictor hidden width; paper 4096 (= projector hidden)


@register_params("simsiam", "siamese network with a predictor and stop-gradient, no momentum encoder",
                 "Chen, He 2021, arXiv:2011.10566")
@dataclass(frozen=True)
class SimSiamParams:
    pred_hidden: int = knob(64, lo=1)  # predictor bottleneck; paper 512 = 2048 / 4


@register_params("dino", "self-distillation: student matches a centred, sharpened EMA teacher (multi-crop)",
                 "Caron et al. 2021, arXiv:2104.14294")
@dataclass(frozen=True)
class DINOParams:
    out_dim: int = knob(1024, lo=2)  # K prototypes of the last layer; paper 65536
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


@register_params("swav", "online clustering: swapped prediction of Sinkhorn codes over prototypes",
                 "Caron et al. 2020, arXiv:2006.09882")
@dataclass(frozen=True)
class SwAVParams:
    n_prototypes: int = knob(64, lo=2)  # K; paper 3000 for ImageNet
    temperature: float = knob(0.1, gt=0.0)  # tau
    epsilon: float = knob(0.05, gt=0.0)  # entropic regularisation of the codes
    sinkhorn_iters: int = knob(3, lo=1)
    queue_length: int = knob(0, lo=0)  # global queue of past embeddings for the codes; 0 = off; paper 3840
    epoch_queue_starts: int = knob(15, lo=0)
    freeze_prototypes_iters: int = knob(5, lo=0)  # paper 313 (= one ImageNet epoch at batch 4096)
    local_crops: int = knob(0, lo=0, hi=16)  # local views (<= augment.multicrop.local_crops)


def describe(name: str) -> dict[str, Any]:
    cls, description, paper = METHOD_PARAMS[name]
    return {"name": name, "description": description, "paper": paper}
