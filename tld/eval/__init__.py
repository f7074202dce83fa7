"""Evaluation: FID / KID / precision-recall on image features, reference statistics and sampler sweeps.

The metric functions need only numpy; feature extractors (`tld.eval.features`), reference
statistics (`tld.eval.reference`) and sweeps (`tld.eval.sweep`) import torch when used.
"""

from tld.eval.metrics import fid_from_features, frechet_distance, kid_from_features, precision_recall

__all__ = ["fid_from_features", "frechet_distance", "kid_from_features", "precision_recall"]
