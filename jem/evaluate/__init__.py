"""Evaluation protocols for frozen and fine-tuned encoders (DESIGN.md section 7).

kNN (:mod:`jem.evaluate.knn`), linear probe (:mod:`jem.evaluate.linear`), semi-supervised
fine-tuning (:mod:`jem.evaluate.semi`) and collapse diagnostics (:mod:`jem.evaluate.collapse`),
all fed by :func:`extract_features` (:mod:`jem.evaluate.features`); the report's arrays (t-SNE,
retrieval, view samples) in :mod:`jem.evaluate.artefacts`.
"""

from jem.evaluate.collapse import (
    alignment,
    collapse_report,
    correlation_matrix,
    cross_correlation,
    embedding_std,
    rankme,
    uniformity,
)
from jem.evaluate.features import extract_features, normalise_images
from jem.evaluate.knn import knn_eval, knn_scores, topk_accuracy
from jem.evaluate.linear import fit_logistic, linear_logits, linear_probe, standardise
from jem.evaluate.semi import finetune

__all__ = [
    "alignment",
    "collapse_report",
    "correlation_matrix",
    "cross_correlation",
    "embedding_std",
    "extract_features",
    "finetune",
    "fit_logistic",
    "knn_eval",
    "knn_scores",
    "linear_logits",
    "linear_probe",
    "normalise_images",
    "rankme",
    "standardise",
    "topk_accuracy",
    "uniformity",
]
