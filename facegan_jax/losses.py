"""Adversarial losses and gradient penalties: pure functions of critic outputs.

Scores are raw critic outputs ("logits") of shape [B]. Every loss returns a
float32 scalar to be minimized by its player. Penalties take a `critic_fn`
mapping images [B, H, W, C] to scores [B]; it must be a pure function of its
input (no state updates), since it is differentiated twice.
"""

from typing import Callable

import jax
import jax.numpy as jnp

LOSSES = ('minimax', 'non_saturating', 'wasserstein', 'hinge', 'least_squares',
          'relativistic')
PENALTIES = ('none', 'wgan_gp', 'dragan', 'r1', 'r1_r2')
# Losses whose generator side also scores real images.
PAIRED_LOSSES = ('relativistic',)

CriticFn = Callable[[jax.Array], jax.Array]


def _sigmoid_cross_entropy(logits: jax.Array, target: float) -> jax.Array:
  """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], computed stably."""
  return jax.nn.softplus(logits) - target * logits


def critic_loss(name: str, real_scores: jax.Array, fake_scores: jax.Array,
                label_smoothing: float = 0.0) -> jax.Array:
  """The critic's (discriminator's) loss.

  Args:
    name: one of LOSSES.
    real_scores: [B] critic outputs on real images.
    fake_scores: [B] critic outputs on generated images.
    label_smoothing: one-sided smoothing: real targets become 1 - s (used by
      the losses that have targets: minimax, non_saturating, least_squares).

  Returns:
    Scalar loss.
  """
  real_target = 1.0 - label_smoothing
  if name in ('minimax', 'non_saturating'):
    return (_sigmoid_cross_entropy(real_scores, real_target).mean() +
            _sigmoid_cross_entropy(fake_scores, 0.0).mean())
  if name == 'wasserstein':
    return fake_scores.mean() - real_scores.mean()
  if name == 'hinge':
    return (jax.nn.relu(1.0 - real_scores).mean() +
            jax.nn.relu(1.0 + fake_scores).mean())
  if name == 'least_squares':
    return 0.5 * (jnp.square(real_scores - real_target).mean() +
                  jnp.square(fake_scores).mean())
  if name == 'relativistic':
    return jax.nn.softplus(fake_scores - real_scores).mean()
  raise ValueError(f'Unknown loss.name {name!r}; valid: {", ".join(LOSSES)}')


def generator_loss(name: str, fake_scores: jax.Array,
                   real_scores: jax.Array | None = None) -> jax.Array:
  """The generator's loss given critic outputs [B] on its images.

  `real_scores` [B] (critic outputs on real images, paired with the fakes
  one to one) are needed by the PAIRED_LOSSES only.
  """
  return generator_losses(name, fake_scores, real_scores).mean()


def generator_losses(name: str, fake_scores: jax.Array,
                     real_scores: jax.Array | None = None) -> jax.Array:
  """generator_loss for each of the B fakes: [B]."""
  if name == 'minimax':
    # Minimizes log(1 - D(G(z))) = -softplus(logit): the original, saturating game.
    return -jax.nn.softplus(fake_scores)
  if name == 'non_saturating':
    return _sigmoid_cross_entropy(fake_scores, 1.0)
  if name in ('wasserstein', 'hinge'):
    return -fake_scores
  if name == 'least_squares':
    return 0.5 * jnp.square(fake_scores - 1.0)
  if name == 'relativistic':
    # RpGAN (Huang et al. 2024, R3GAN): each fake against its paired real.
    return jax.nn.softplus(real_scores - fake_scores)
  raise ValueError(f'Unknown loss.name {name!r}; valid: {", ".join(LOSSES)}')


def top_k_count(batch: int, step: jax.Array, min_fraction: float,
                half_life: float) -> jax.Array:
  """How many of `batch` fakes a top-k generator update keeps at `step`.

  Sinha et al. 2020 anneal k from the whole batch to a floor; here the kept
  fraction halves every `half_life` updates, a function of the step alone so
  resumed runs keep the same schedule.
  """
  fraction = jnp.maximum(0.5 ** (step / half_life), min_fraction)
  return jnp.clip(jnp.ceil(fraction * batch), 1, batch).astype(jnp.int32)


def top_k_mean(values: jax.Array, scores: jax.Array, k: jax.Array) -> jax.Array:
  """Mean of `values` [B] over the k examples with the highest `scores` [B]."""
  rank = jnp.argsort(jnp.argsort(-scores))  # 0 for the most real-looking.
  kept = rank < k
  return jnp.where(kept, values, 0.0).sum() / k


def lecam_penalty(real_scores: jax.Array, fake_scores: jax.Array,
                  averages: dict[str, jax.Array], update_index: jax.Array,
                  decay: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """LeCam regularization of the critic (Tseng et al. 2021) and its anchors.

  Moving averages of the critic's mean score on real and on fake images
  anchor each other: real scores above the fake average and fake scores
  below the real average are penalized, so a critic that starts to memorize
  a small training set cannot push the two apart without bound.

  Args:
    real_scores, fake_scores: [B] critic outputs.
    averages: {'real', 'fake'}: the moving averages before this update
      (zeros at the start of a run).
    update_index: critic updates before this one in the run; corrects the
      zero start's bias, as Adam does.
    decay: the averages' decay per critic update.

  Returns:
    (penalty, the averages updated with this batch's means).
  """
  means = {'real': real_scores.mean(), 'fake': fake_scores.mean()}
  averages = jax.tree_util.tree_map(
      lambda average, mean: decay * average +
      (1.0 - decay) * jax.lax.stop_gradient(mean).astype(jnp.float32),
      averages, means)
  unbiased = 1.0 - decay ** jnp.asarray(update_index + 1, jnp.float32)
  real_anchor = averages['real'] / unbiased
  fake_anchor = averages['fake'] / unbiased
  penalty = (jnp.square(jax.nn.relu(real_scores - fake_anchor)).mean() +
             jnp.square(jax.nn.relu(real_anchor - fake_scores)).mean())
  return penalty.astype(jnp.float32), averages


def consistency_penalty(scores: jax.Array,
                        augmented_scores: jax.Array) -> jax.Array:
  """Consistency regularization (Zhang et al. 2020): the mean squared
  difference between the critic's scores [B] of images and of augmented
  copies of them, so the critic cannot tell faces apart by what the
  augmentation changes (a position, a side)."""
  difference = scores.astype(jnp.float32) - augmented_scores.astype(jnp.float32)
  return jnp.mean(jnp.square(difference))


def input_gradients(critic_fn: CriticFn, images: jax.Array) -> jax.Array:
  """d critic / d images, per example: [B, H, W, C].

  Examples are independent in the critic (no batch norm), so the gradient of
  the summed scores holds each example's own input gradient.
  """
  return jax.grad(lambda x: critic_fn(x).astype(jnp.float32).sum())(images)


def _per_example_norm(grads: jax.Array) -> jax.Array:
  squared = jnp.sum(jnp.square(grads.astype(jnp.float32)),
                    axis=tuple(range(1, grads.ndim)))
  # The epsilon keeps the norm's derivative finite where a gradient is zero.
  return jnp.sqrt(squared + 1e-12)


def wgan_gp_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array,
                    rng: jax.Array, weight: float) -> jax.Array:
  """WGAN-GP: weight * E[(||grad D(x_hat)|| - 1)^2] on random interpolates.

  Args:
    critic_fn: images [B, H, W, C] -> scores [B], pure.
    real: [B, H, W, C] real images.
    fake: [B, H, W, C] generated images (no gradient flows into them).
    rng: PRNG key for the interpolation coefficients.
    weight: lambda.
  """
  real = real.astype(jnp.float32)
  fake = jax.lax.stop_gradient(fake).astype(jnp.float32)
  alpha = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1))
  interpolates = alpha * real + (1.0 - alpha) * fake
  norms = _per_example_norm(input_gradients(critic_fn, interpolates))
  return weight * jnp.mean(jnp.square(norms - 1.0))


def dragan_penalty(critic_fn: CriticFn, real: jax.Array, rng: jax.Array,
                   weight: float, perturb_scale: float = 0.5) -> jax.Array:
  """DRAGAN: weight * E[(||grad D(x_p)|| - 1)^2] around perturbed reals.

  x_p = x + perturb_scale * std(x) * u, u ~ U[0, 1] elementwise, as in
  Kodali et al. (2017).
  """
  real = real.astype(jnp.float32)
  noise = jax.random.uniform(rng, real.shape)
  perturbed = real + perturb_scale * jnp.std(real) * noise
  norms = _per_example_norm(input_gradients(critic_fn, perturbed))
  return weight * jnp.mean(jnp.square(norms - 1.0))


def r1_penalty(critic_fn: CriticFn, real: jax.Array,
               weight: float) -> jax.Array:
  """R1 (Mescheder et al. 2018): weight / 2 * E[||grad D(x_real)||^2]."""
  grads = input_gradients(critic_fn, real.astype(jnp.float32))
  squared = jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim)))
  return 0.5 * weight * jnp.mean(squared)


def r1_r2_penalty(critic_fn: CriticFn, real: jax.Array, fake: jax.Array,
                  weight: float) -> jax.Array:
  """R1 + R2 (R3GAN): zero-centred gradient penalties on real and on fake.

  weight / 2 * (E||grad D(x_real)||^2 + E||grad D(x_fake)||^2); the two
  sets go through the critic separately (a minibatch-stddev layer would
  otherwise mix them).
  """
  return (r1_penalty(critic_fn, real, weight) +
          r1_penalty(critic_fn, jax.lax.stop_gradient(fake), weight))


def penalty(name: str, critic_fn: CriticFn, real: jax.Array, fake: jax.Array,
            rng: jax.Array, weight: float) -> jax.Array:
  """Dispatches to the penalty `name` (one of PENALTIES); 'none' gives 0."""
  if name == 'none':
    return jnp.zeros((), jnp.float32)
  if name == 'wgan_gp':
    return wgan_gp_penalty(critic_fn, real, fake, rng, weight)
  if name == 'dragan':
    return dragan_penalty(critic_fn, real, rng, weight)
  if name == 'r1':
    return r1_penalty(critic_fn, real, weight)
  if name == 'r1_r2':
    return r1_r2_penalty(critic_fn, real, fake, weight)
  raise ValueError(
      f'Unknown loss.penalty {name!r}; valid: {", ".join(PENALTIES)}')


# The running mean's update rate and the batch fraction of StyleGAN2's path
# length regularization (Karras et al. 2020, its reference settings).
PATH_LENGTH_DECAY = 0.01
PATH_LENGTH_BATCH_SHRINK = 2


def path_length_penalty(synthesize: Callable[[jax.Array], jax.Array],
                        ws: jax.Array, rng: jax.Array, running_mean: jax.Array,
                        decay: float = PATH_LENGTH_DECAY
                        ) -> tuple[jax.Array, jax.Array]:
  """StyleGAN2's path length regularizer, unweighted.

  The length of J^T y, J the Jacobian of the images w.r.t. the styles ws and
  y Gaussian image noise scaled by 1/sqrt(H W), is pulled towards its running
  mean a, so a fixed step in w moves the image by a fixed amount:
  E[(|J^T y| - a)^2], with a first moved `decay` of the way to this batch's
  mean length.

  Args:
    synthesize: ws [B, L, w_dim] -> images [B, H, W, C], pure.
    ws: the styles [B, L, w_dim] (L per-layer copies, possibly mixed).
    rng: draws y.
    running_mean: a, a float32 scalar.
    decay: how far a moves towards the batch mean.

  Returns:
    (penalty, the updated running mean).
  """
  shape = jax.eval_shape(synthesize, ws).shape
  noise = jax.random.normal(rng, shape) / jnp.sqrt(float(shape[1] * shape[2]))
  grads = jax.grad(lambda w: jnp.sum(synthesize(w) * noise))(ws)
  # Squared length summed over w's size and averaged over the layers.
  lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
  new_mean = running_mean + decay * (
      jnp.mean(jax.lax.stop_gradient(lengths)) - running_mean)
  return jnp.mean(jnp.square(lengths - new_mean)), new_mean
