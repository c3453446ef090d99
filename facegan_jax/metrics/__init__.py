"""Evaluation metrics: FID, KID, IS and precision/recall on FID Inception-v3.

Typical use (see each module for details):

  extractor = metrics.feature_extractor(mesh)          # finds the weights
  real = metrics.reference_statistics(real_batches, extractor=extractor, ...)
  fake_features, fake_logits = metrics.extract_features(extractor, batches)
  scores = metrics.compute_all(real, fake_features, None, fake_logits)
  scores_provenance = extractor.provenance()

The modules `inception_score` and `precision_recall` hold the functions of
the same names. This package imports jax, flax, numpy and scipy only (no
TensorFlow, no torch): torch weight files are read by `torch_archive`.
"""

from facegan_jax.metrics.features import extract_features
from facegan_jax.metrics.features import feature_extractor
from facegan_jax.metrics.features import FeatureExtractor
from facegan_jax.metrics.features import provenance
from facegan_jax.metrics.fid import fid_from_features
from facegan_jax.metrics.fid import frechet_distance
from facegan_jax.metrics.fid import gaussian_statistics
from facegan_jax.metrics.inception_weights import find_weights
from facegan_jax.metrics.inception_weights import InceptionWeights
from facegan_jax.metrics.inception_weights import WeightsNotFoundError
from facegan_jax.metrics.kid import kernel_inception_distance
from facegan_jax.metrics.reference_stats import dataset_fingerprint
from facegan_jax.metrics.reference_stats import load_reference_statistics
from facegan_jax.metrics.reference_stats import reference_statistics
from facegan_jax.metrics.reference_stats import ReferenceStatistics
from facegan_jax.metrics.scores import ALL_METRICS
from facegan_jax.metrics.scores import compute_all
