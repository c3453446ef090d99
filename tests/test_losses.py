"""Losses and penalties against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegan_jax import losses

REAL = jnp.array([2.0, -1.0, 0.5])
FAKE = jnp.array([-0.5, 1.5, 0.0])


def _softplus(x):
  return np.log1p(np.exp(x))


def test_wasserstein_losses():
  np.testing.assert_allclose(losses.critic_loss('wasserstein', REAL, FAKE),
                             FAKE.mean() - REAL.mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss('wasserstein', FAKE),
                             -FAKE.mean(), rtol=1e-6)


def test_minimax_and_non_saturating_match_binary_cross_entropy():
  real, fake = np.asarray(REAL), np.asarray(FAKE)
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  expected_d = (-np.log(sigmoid(real)).mean() - np.log(1 - sigmoid(fake)).mean())
  for name in ('minimax', 'non_saturating'):
    np.testing.assert_allclose(losses.critic_loss(name, REAL, FAKE),
                               expected_d, rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss('minimax', FAKE),
                             np.log(1 - sigmoid(fake)).mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss('non_saturating', FAKE),
                             -np.log(sigmoid(fake)).mean(), rtol=1e-5)


def test_label_smoothing_is_one_sided():
  s = 0.1
  real, fake = np.asarray(REAL), np.asarray(FAKE)
  expected = ((_softplus(real) - (1 - s) * real).mean() + _softplus(fake).mean())
  np.testing.assert_allclose(
      losses.critic_loss('non_saturating', REAL, FAKE, label_smoothing=s),
      expected, rtol=1e-5)
  # Fake targets stay 0: d loss / d fake = sigmoid(fake) / B with or without
  # smoothing, while the real targets move to 1 - s.
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  grad_real, grad_fake = jax.grad(
      lambda r, f: losses.critic_loss('non_saturating', r, f, s),
      argnums=(0, 1))(REAL, FAKE)
  np.testing.assert_allclose(grad_fake, sigmoid(fake) / 3, rtol=1e-5)
  np.testing.assert_allclose(grad_real, (sigmoid(real) - (1 - s)) / 3,
                             rtol=1e-5)


def test_hinge_losses():
  real, fake = np.asarray(REAL), np.asarray(FAKE)
  expected = np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean()
  np.testing.assert_allclose(losses.critic_loss('hinge', REAL, FAKE), expected,
                             rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss('hinge', FAKE), -fake.mean(),
                             rtol=1e-6)


def test_least_squares_losses():
  real, fake = np.asarray(REAL), np.asarray(FAKE)
  np.testing.assert_allclose(
      losses.critic_loss('least_squares', REAL, FAKE),
      0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake ** 2).mean(), rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss('least_squares', FAKE),
                             0.5 * ((fake - 1) ** 2).mean(), rtol=1e-6)


def test_relativistic_pairs_each_fake_with_a_real():
  real, fake = np.asarray(REAL, np.float64), np.asarray(FAKE, np.float64)
  softplus = lambda x: np.log1p(np.exp(x))
  np.testing.assert_allclose(losses.critic_loss('relativistic', REAL, FAKE),
                             softplus(fake - real).mean(), rtol=1e-6)
  np.testing.assert_allclose(
      losses.generator_loss('relativistic', FAKE, REAL),
      softplus(real - fake).mean(), rtol=1e-6)
  # Pairs, not all real-fake combinations: permuting one side changes it.
  assert not np.isclose(losses.critic_loss('relativistic', REAL, FAKE[::-1]),
                        losses.critic_loss('relativistic', REAL, FAKE))


def test_top_k_keeps_a_fraction_that_halves_every_half_life_to_a_floor():
  counts = [int(losses.top_k_count(16, jnp.asarray(step), 0.25, 100.0))
            for step in (0, 50, 100, 200, 10_000)]
  assert counts == [16, 12, 8, 4, 4]  # ceil(16 * 2^-0.5) = 12
  assert int(losses.top_k_count(16, jnp.asarray(10_000), 0.5, 100.0)) == 8
  assert int(losses.top_k_count(4, jnp.asarray(10_000), 0.01, 1.0)) == 1


def test_top_k_mean_averages_the_losses_of_the_highest_scored_fakes():
  values = jnp.array([1.0, 2.0, 4.0, 8.0, 16.0])
  scores = jnp.array([0.3, -2.0, 5.0, 0.1, -1.0])
  np.testing.assert_allclose(losses.top_k_mean(values, scores, 2), 2.5)
  np.testing.assert_allclose(losses.top_k_mean(values, scores, 3), 13 / 3)
  np.testing.assert_allclose(losses.top_k_mean(values, scores, 5),
                             values.mean())
  # Per-fake losses average to the batch loss.
  np.testing.assert_allclose(
      losses.generator_losses('non_saturating', FAKE).mean(),
      losses.generator_loss('non_saturating', FAKE), rtol=1e-6)


def test_lecam_anchors_each_side_to_the_bias_corrected_average_of_the_other():
  real = jnp.array([1.0, -0.5, 2.0, 0.3])
  fake = jnp.array([-1.0, 0.4, -2.0, 0.1])
  zeros = {'real': jnp.zeros(()), 'fake': jnp.zeros(())}

  def by_hand(real, fake, real_anchor, fake_anchor):
    return (np.square(np.maximum(real - fake_anchor, 0)).mean() +
            np.square(np.maximum(real_anchor - fake, 0)).mean())

  # First update: the corrected averages are this batch's means exactly.
  penalty, averages = losses.lecam_penalty(real, fake, zeros, 0, 0.9)
  np.testing.assert_allclose(averages['real'], 0.1 * real.mean(), rtol=1e-6)
  np.testing.assert_allclose(
      penalty, by_hand(real, fake, real.mean(), fake.mean()), rtol=1e-6)
  # Second update: (0.9 * 0.1 m1 + 0.1 m2) / (1 - 0.9^2).
  penalty, second = losses.lecam_penalty(-fake, -real, averages, 1, 0.9)
  real_anchor = (0.09 * real.mean() - 0.1 * fake.mean()) / 0.19
  fake_anchor = (0.09 * fake.mean() - 0.1 * real.mean()) / 0.19
  np.testing.assert_allclose(second['real'] / 0.19, real_anchor, rtol=1e-5)
  np.testing.assert_allclose(
      penalty, by_hand(-fake, -real, real_anchor, fake_anchor), rtol=1e-5)
  # The anchors are constants: each score's gradient is its own term's.
  grad = jax.grad(lambda r: losses.lecam_penalty(r, fake, zeros, 0, 0.9)[0])(
      real)
  np.testing.assert_allclose(
      grad, 2 * np.maximum(real - fake.mean(), 0) / 4, rtol=1e-5)


def test_unknown_names_are_refused_with_choices():
  with pytest.raises(ValueError, match='hinge'):
    losses.critic_loss('wgan', REAL, FAKE)
  with pytest.raises(ValueError, match='least_squares'):
    losses.generator_loss('lsq', FAKE)
  with pytest.raises(ValueError, match='wgan_gp'):
    losses.penalty('gp', lambda x: x.sum(), None, None, None, 1.0)


def _linear_critic(w):
  return lambda x: jnp.einsum('bhwc,hwc->b', x, w)


@pytest.fixture(scope='module')
def linear_setup():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(4, 4, 3)) * 0.2, jnp.float32)
  real = jnp.asarray(rng.uniform(-1, 1, (5, 4, 4, 3)), jnp.float32)
  fake = jnp.asarray(rng.uniform(-1, 1, (5, 4, 4, 3)), jnp.float32)
  return w, real, fake


def test_wgan_gp_of_linear_critic_is_closed_form(linear_setup):
  # D(x) = <w, x> has input gradient w everywhere: penalty = lambda (|w| - 1)^2.
  w, real, fake = linear_setup
  norm = float(jnp.linalg.norm(w))
  value = losses.wgan_gp_penalty(_linear_critic(w), real, fake,
                                 jax.random.PRNGKey(0), 10.0)
  np.testing.assert_allclose(value, 10.0 * (norm - 1) ** 2, rtol=1e-5)
  # Its gradient w.r.t. w is lambda * 2 (|w| - 1) w / |w|.
  grad = jax.grad(lambda w: losses.wgan_gp_penalty(
      _linear_critic(w), real, fake, jax.random.PRNGKey(0), 10.0))(w)
  np.testing.assert_allclose(grad, 10.0 * 2 * (norm - 1) * w / norm, rtol=1e-4,
                             atol=1e-6)


def test_dragan_and_r1_of_linear_critic(linear_setup):
  w, real, _ = linear_setup
  norm = float(jnp.linalg.norm(w))
  np.testing.assert_allclose(
      losses.dragan_penalty(_linear_critic(w), real, jax.random.PRNGKey(1), 10.0),
      10.0 * (norm - 1) ** 2, rtol=1e-5)
  np.testing.assert_allclose(losses.r1_penalty(_linear_critic(w), real, 4.0),
                             0.5 * 4.0 * norm ** 2, rtol=1e-5)


def test_r1_r2_penalizes_real_and_fake_gradients(linear_setup):
  # A linear critic has gradient w on real and on fake images alike.
  w, real, fake = linear_setup
  norm = float(jnp.linalg.norm(w))
  np.testing.assert_allclose(
      losses.penalty('r1_r2', _linear_critic(w), real, fake, None, 4.0),
      2 * 0.5 * 4.0 * norm ** 2, rtol=1e-5)
  # A critic that is flat on the fakes' half of the space: only R1 remains.
  bent = lambda x: jnp.einsum('bhwc,hwc->b', jnp.maximum(x, 1.5), w)
  shifted = real + 3.0  # every pixel > 1.5: gradient w
  np.testing.assert_allclose(
      losses.r1_r2_penalty(bent, shifted, real - 3.0, 4.0),
      0.5 * 4.0 * norm ** 2, rtol=1e-5)


def test_wgan_gp_uses_per_example_norms():
  # D(x) = sum(x^2) / 2 has gradient x: each interpolate's own norm counts.
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real = jnp.stack([jnp.full((2, 2, 1), 1.0), jnp.full((2, 2, 1), 3.0)])
  fake = real  # interpolates equal the reals whatever alpha is
  norms = np.array([2.0, 6.0])  # |x| for 4 pixels of value 1 and 3
  expected = np.mean((norms - 1) ** 2)
  np.testing.assert_allclose(
      losses.wgan_gp_penalty(critic, real, fake, jax.random.PRNGKey(0), 1.0),
      expected, rtol=1e-5)


def test_wgan_gp_interpolates_between_real_and_fake():
  # A critic whose input gradient is x itself reveals where it was evaluated.
  critic = lambda x: 0.5 * jnp.sum(jnp.square(x), axis=(1, 2, 3))
  real = jnp.full((64, 1, 1, 1), 1.0)
  fake = jnp.full((64, 1, 1, 1), -1.0)
  grads = losses.input_gradients(critic, real)  # sanity: gradient is x
  np.testing.assert_allclose(grads, real)
  # Interpolates lie in [-1, 1], so norms |x| <= 1 and the penalty is
  # E[(|x| - 1)^2] with x = 2a - 1, a ~ U[0,1]: E = 1/3 for many samples.
  value = losses.wgan_gp_penalty(critic, real, fake, jax.random.PRNGKey(0), 1.0)
  assert 0.15 < float(value) < 0.55


def test_path_length_of_a_linear_synthesis_is_closed_form():
  # images = ws . M (linear in the styles): J^T y = y . M^T, known exactly.
  batch, layers, w_dim, side = 3, 2, 4, 2
  ws = jax.random.normal(jax.random.key(0), (batch, layers, w_dim))
  matrix = jax.random.normal(jax.random.key(1), (layers * w_dim, side * side * 3))

  def synthesize(w, m=matrix):
    return (w.reshape(batch, -1) @ m).reshape(batch, side, side, 3)

  rng = jax.random.key(2)
  penalty, new_mean = losses.path_length_penalty(synthesize, ws, rng, 0.5,
                                                 decay=0.25)
  y = jax.random.normal(rng, (batch, side, side, 3)) / side
  grads = (np.asarray(y).reshape(batch, -1) @ np.asarray(matrix).T).reshape(
      batch, layers, w_dim)
  lengths = np.sqrt((grads ** 2).sum(2).mean(1))
  expected_mean = 0.5 + 0.25 * (lengths.mean() - 0.5)
  assert float(new_mean) == pytest.approx(expected_mean, rel=1e-5)
  assert float(penalty) == pytest.approx(
      np.mean((lengths - expected_mean) ** 2), rel=1e-5)
  # It regularizes the synthesis: its gradient reaches the weights.
  grad_m = jax.grad(lambda m: losses.path_length_penalty(
      lambda w: synthesize(w, m), ws, rng, 0.5)[0])(matrix)
  assert float(jnp.abs(grad_m).max()) > 0


def test_consistency_penalty_is_the_mean_squared_score_difference():
  scores = jnp.array([1.0, 2.0, -1.0, 0.5])
  augmented = jnp.array([0.0, 4.0, -1.0, 0.5])
  np.testing.assert_allclose(
      losses.consistency_penalty(scores, augmented), (1 + 4 + 0 + 0) / 4)
  assert losses.consistency_penalty(scores, scores) == 0
  # Both scores get its gradient: the critic is pulled from either side.
  grad = jax.grad(losses.consistency_penalty, argnums=(0, 1))(scores, augmented)
  np.testing.assert_allclose(grad[0], [0.5, -1.0, 0, 0])
  np.testing.assert_allclose(grad[1], -grad[0])
