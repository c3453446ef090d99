"""Tests of FID, KID, IS, precision/recall, compute_all and reference stats.

No Inception here: features are synthetic, and each metric is checked
against an independent formula or a case whose answer is known exactly.
"""

import json

import numpy as np
import pytest
from scipy import linalg

from facegan_jax import metrics
from facegan_jax.metrics import inception_score
from facegan_jax.metrics import kid
from facegan_jax.metrics import precision_recall
from facegan_jax.metrics import reference_stats


def _features(seed, n, d, shift=0.0, scale=1.0):
  # One fixed correlated distribution; `seed` draws samples from it.
  mixing = np.random.default_rng(1234).normal(size=(d, d)) / np.sqrt(d)
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, d)) @ mixing * scale + shift).astype(np.float32)


def _fid_scipy_sqrtm(real, fake):
  # pytorch-fid's formula: sqrtm of the (non-symmetric) product.
  mu1, mu2 = real.mean(0), fake.mean(0)
  s1 = np.cov(real.astype(np.float64), rowvar=False)
  s2 = np.cov(fake.astype(np.float64), rowvar=False)
  covmean = linalg.sqrtm(s1 @ s2)
  return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(covmean.real))


# --- FID --------------------------------------------------------------------


def test_gaussian_statistics_are_float64_mean_and_unbiased_covariance():
  x = _features(0, 40, 6)
  mu, sigma = metrics.gaussian_statistics(x)
  assert mu.dtype == sigma.dtype == np.float64
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
  centred = x.astype(np.float64) - mu
  np.testing.assert_allclose(sigma, centred.T @ centred / 39, rtol=1e-10)


@pytest.mark.parametrize('n,d', [(200, 16), (30, 64)])  # full rank; singular
def test_fid_matches_scipy_sqrtm_formula(n, d):
  real = _features(1, n, d)
  fake = _features(2, n, d, shift=0.3, scale=1.5)
  ours = metrics.fid_from_features(real, fake)
  np.testing.assert_allclose(ours, _fid_scipy_sqrtm(real, fake), rtol=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_shift_adds_its_square():
  real = _features(3, 100, 8)
  assert abs(metrics.fid_from_features(real, real)) < 1e-8
  shift = np.arange(8, dtype=np.float32) / 4
  # Same covariance, mean moved by `shift`: FID = |shift|^2 exactly.
  np.testing.assert_allclose(metrics.fid_from_features(real, real + shift),
                             float(shift @ shift), rtol=1e-6)


def test_frechet_distance_of_known_gaussians():
  # N(0, I) vs N(0, 4I) in d dims: d * (1 + 4 - 2 * 2) = d.
  d = 5
  value = metrics.frechet_distance(np.zeros(d), np.eye(d), np.zeros(d),
                                   4 * np.eye(d))
  assert value == pytest.approx(d, rel=1e-12)


# --- KID --------------------------------------------------------------------


def _mmd2_by_loops(x, y):
  m, d = x.shape
  k = lambda a, b: (a @ b / d + 1) ** 3
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m ** 2


def test_mmd2_unbiased_matches_explicit_double_sums():
  x = _features(4, 12, 5).astype(np.float64)
  y = _features(5, 12, 5, shift=0.5).astype(np.float64)
  np.testing.assert_allclose(kid.mmd2_unbiased(x, y), _mmd2_by_loops(x, y),
                             rtol=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
  same_a, same_b = _features(6, 400, 8), _features(7, 400, 8)
  different = _features(8, 400, 8, shift=1.0)
  near, near_std = metrics.kernel_inception_distance(
      same_a, same_b, num_subsets=20, subset_size=200)
  far, _ = metrics.kernel_inception_distance(same_a, different,
                                             num_subsets=20, subset_size=200)
  assert abs(near) < 3 * near_std + 1e-3
  assert far > 10 * max(abs(near), near_std)


def test_kid_subset_size_is_capped_and_seed_reproduces():
  x, y = _features(9, 30, 4), _features(10, 25, 4, shift=0.2)
  first = metrics.kernel_inception_distance(x, y, num_subsets=5,
                                            subset_size=1000, seed=3)
  again = metrics.kernel_inception_distance(x, y, num_subsets=5,
                                            subset_size=1000, seed=3)
  assert first == again
  # Capped at 25 = all of y in every subset, so only x's draw varies.
  assert np.isfinite(first[0]) and first[1] >= 0


# --- IS ---------------------------------------------------------------------


def _is_original_formula(logits, splits):
  # The original IS code: softmax, then per split exp(mean KL(p(y|x)||p(y))).
  preds = np.exp(logits - logits.max(1, keepdims=True))
  preds /= preds.sum(1, keepdims=True)
  scores = []
  n = preds.shape[0]
  for i in range(splits):
    part = preds[i * n // splits:(i + 1) * n // splits]
    py = part.mean(0, keepdims=True)
    kl = np.sum(part * (np.log(part) - np.log(py)), 1)
    scores.append(np.exp(np.mean(kl)))
  return np.mean(scores), np.std(scores)


def test_inception_score_matches_original_formula():
  logits = np.random.default_rng(11).normal(size=(100, 1008)) * 3
  ours = inception_score.inception_score(logits, num_splits=10)
  np.testing.assert_allclose(ours, _is_original_formula(logits, 10),
                             rtol=1e-9)


def test_inception_score_extremes():
  uniform = np.zeros((50, 1008))
  assert inception_score.inception_score(uniform, 5)[0] == pytest.approx(1.0)
  # Confident, evenly spread over 10 classes in every split: IS = 10.
  confident = np.full((100, 1008), -50.0)
  confident[np.arange(100), np.arange(100) % 10] = 50.0
  mean, std = inception_score.inception_score(confident, 10)
  assert mean == pytest.approx(10.0, rel=1e-6)
  assert std == pytest.approx(0.0, abs=1e-6)


# --- Precision / recall -----------------------------------------------------


def _precision_recall_brute_force(real, fake, k):
  def radii(x):
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    return np.sort(d, axis=1)[:, k]
  def coverage(samples, centres, r):
    d = np.linalg.norm(samples[:, None] - centres[None], axis=-1)
    return (d <= r[None]).any(axis=1).mean()
  return (coverage(fake, real, radii(real)), coverage(real, fake, radii(fake)))


def test_precision_recall_matches_brute_force():
  real = _features(12, 120, 6)
  fake = _features(13, 90, 6, shift=0.4, scale=0.7)
  ours = precision_recall.precision_recall(real, fake, k=3, batch_size=32)
  expected = _precision_recall_brute_force(real.astype(np.float64),
                                           fake.astype(np.float64), 3)
  np.testing.assert_allclose(ours, expected, atol=1e-9)
  assert 0.0 < ours[0] < 1.0 and 0.0 < ours[1] < 1.0


def test_precision_recall_known_geometry():
  grid = np.stack(np.meshgrid(np.arange(6.), np.arange(6.)), -1).reshape(-1, 2)
  assert precision_recall.precision_recall(grid, grid + 0.1) == (1.0, 1.0)
  far = grid + 100.0
  assert precision_recall.precision_recall(grid, far) == (0.0, 0.0)
  # Fakes cover rows 0-2 of the 6x6 grid, half of them collapsed onto one
  # point: precision stays 1; their radius-1 balls reach rows 0-3 only, so
  # recall is 24/36.
  collapsed = np.concatenate([grid[:18], np.repeat(grid[:1], 18, axis=0)])
  precision, recall = precision_recall.precision_recall(grid, collapsed)
  assert precision == 1.0 and recall == pytest.approx(24 / 36)


# --- compute_all ------------------------------------------------------------


def test_compute_all_keys_values_and_missing_logits():
  # Equal set sizes and KID subsets as large as the sets: every subset pair
  # is the whole of both sets, so KID is their MMD^2 with a std of 0.
  real, fake = _features(14, 40, 8), _features(15, 40, 8, shift=0.3)
  logits = np.random.default_rng(16).normal(size=(40, 1008))
  scores = metrics.compute_all(real, fake, None, logits, kid_num_subsets=3,
                               kid_subset_size=40, is_num_splits=4, pr_k=2)
  assert set(scores) == {'fid', 'kid_mean', 'kid_std', 'is_mean', 'is_std',
                         'precision', 'recall', 'num_real', 'num_fake'}
  assert scores['fid'] == pytest.approx(_fid_scipy_sqrtm(real, fake),
                                        rel=1e-6)
  assert scores['kid_mean'] == pytest.approx(
      _mmd2_by_loops(real.astype(np.float64), fake.astype(np.float64)),
      rel=1e-9)
  assert scores['kid_std'] == pytest.approx(0.0, abs=1e-9)
  assert (scores['is_mean'], scores['is_std']) == pytest.approx(
      _is_original_formula(logits, 4), rel=1e-9)
  assert (scores['precision'], scores['recall']) == pytest.approx(
      _precision_recall_brute_force(real.astype(np.float64),
                                    fake.astype(np.float64), 2), abs=1e-9)
  assert (scores['num_real'], scores['num_fake']) == (40.0, 40.0)

  only_fid = metrics.compute_all(real, fake[:30], metrics=('fid',))
  assert only_fid['fid'] == pytest.approx(_fid_scipy_sqrtm(real, fake[:30]),
                                          rel=1e-6)
  assert (only_fid['num_real'], only_fid['num_fake']) == (40.0, 30.0)
  assert np.isnan(only_fid['is_mean']) and np.isnan(only_fid['kid_mean'])
  with pytest.raises(ValueError, match='Unknown metrics'):
    metrics.compute_all(real, fake, metrics=('fdi',))


def test_compute_all_accepts_reference_statistics():
  real, fake = _features(17, 80, 8), _features(18, 80, 8, shift=0.2)
  mu, sigma = metrics.gaussian_statistics(real)
  stats = metrics.ReferenceStatistics(mu=mu, sigma=sigma, features=real,
                                      logits=None, info={})
  from_stats = metrics.compute_all(stats, fake, metrics=('fid', 'kid'),
                                   kid_num_subsets=5, kid_subset_size=50)
  from_array = metrics.compute_all(real, fake, metrics=('fid', 'kid'),
                                   kid_num_subsets=5, kid_subset_size=50)
  assert from_stats == pytest.approx(from_array, nan_ok=True)


# --- Reference statistics ---------------------------------------------------


class _FakeExtractor:
  """Stands in for the Inception: features = per-channel image means."""

  num_shards = 1
  mesh = None
  has_logits = False

  def __init__(self, weights_sha256='w' * 64):
    self.weights_sha256 = weights_sha256

  def __call__(self, images):
    pixels = np.asarray(images, np.float32)
    feats = np.concatenate([pixels.mean((1, 2)), pixels.std((1, 2))], axis=1)
    return feats, None

  def provenance(self):
    return {'weights_sha256': self.weights_sha256, 'weights_source': 'fake',
            'resize_method': 'none', 'inception_input_size': 299}


def _image_batches(calls, num=10, batch=4):
  def batches():
    calls.append(1)
    rng = np.random.default_rng(0)
    for start in range(0, num, batch):
      yield rng.integers(0, 256, (min(batch, num - start), 8, 8, 3), np.uint8)
  return batches


def test_reference_statistics_are_cached_with_provenance(tmp_path):
  calls = []
  fingerprint = metrics.dataset_fingerprint({'source': 'test', 'n': 10})
  kwargs = dict(extractor=_FakeExtractor(), fingerprint=fingerprint,
                num_images=10, resolution=8, resize_method='PIL bicubic',
                cache_dir=tmp_path, progress=False)
  first = metrics.reference_statistics(_image_batches(calls), **kwargs)
  assert len(calls) == 1
  assert first.features.shape == (10, 6) and first.logits is None
  # The features of every image, in order, and their mean and covariance.
  expected = np.concatenate(
      [_FakeExtractor()(images)[0] for images in _image_batches([])()])
  np.testing.assert_allclose(first.features, expected, rtol=1e-6)
  np.testing.assert_allclose(first.mu, expected.mean(0), rtol=1e-6)
  np.testing.assert_allclose(first.sigma, np.cov(expected, rowvar=False),
                             rtol=1e-5, atol=1e-8)

  again = metrics.reference_statistics(_image_batches(calls), **kwargs)
  assert len(calls) == 1, 'second call must come from the cache'
  np.testing.assert_array_equal(again.features, first.features)

  [json_path] = (tmp_path / 'reference_stats').glob('*.json')
  info = json.loads(json_path.read_text())
  for key, value in {'dataset_fingerprint': fingerprint, 'num_images': 10,
                     'resolution': 8, 'resize_method': 'PIL bicubic',
                     'weights_sha256': 'w' * 64,
                     'inception_input_size': 299}.items():
    assert info[key] == value, key
  assert len(info['npz_sha256']) == 64

  # Other weights or another resize: a different key, so recomputed.
  metrics.reference_statistics(_image_batches(calls), **dict(
      kwargs, extractor=_FakeExtractor('v' * 64)))
  metrics.reference_statistics(_image_batches(calls), **dict(
      kwargs, resize_method='PIL box'))
  assert len(calls) == 3


def test_corrupt_reference_statistics_are_recomputed(tmp_path):
  calls = []
  kwargs = dict(extractor=_FakeExtractor(), fingerprint='f', num_images=10,
                resolution=8, resize_method='none', cache_dir=tmp_path,
                progress=False)
  metrics.reference_statistics(_image_batches(calls), **kwargs)
  [npz_path] = (tmp_path / 'reference_stats').glob('*.npz')
  npz_path.write_bytes(npz_path.read_bytes()[:-10] + b'0123456789')
  with pytest.raises(ValueError, match='sha256'):
    reference_stats.load_reference_statistics(npz_path)
  stats = metrics.reference_statistics(_image_batches(calls), **kwargs)
  assert len(calls) == 2 and stats.features.shape == (10, 6)
  reference_stats.load_reference_statistics(npz_path)  # Intact again.
