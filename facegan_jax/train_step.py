"""The GAN update as pure functions: state creation and one training step.

This module imports no TensorFlow, so benchmarks and GPU machines use it as
is. The step consumes a batch of real images shaped [n_critic, B, H, W, C]:
each of the n_critic critic updates gets its own fresh real batch of B images
(as in Algorithm 1 of the WGAN-GP paper), followed by one generator update on
B fresh latent vectors. The critic updates run inside one `lax.scan`, so a
whole iteration is a single compiled program. `config.share_fakes` (n_critic
= 1) makes the generator update reuse the critic update's fakes instead
(`GanUpdate.shared_fakes_step`).
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from facegan_jax import conditioning
from facegan_jax import latents
from facegan_jax import losses
from facegan_jax.diffaugment import diff_augment
from facegan_jax import models
from facegan_jax import optimizers
from facegan_jax import partitioning
from facegan_jax import standing_stats as standing_stats_lib
from facegan_jax.train_state import TrainState

Metrics = dict[str, jax.Array]


def create_models(config: ml_collections.ConfigDict) -> tuple[nn.Module, nn.Module]:
  """The generator and the critic named by `config.model`."""
  dtype = jnp.dtype(config.dtype)
  resolution = config.dataset.resolution
  num_attributes = len(conditioning.conditioned_attributes(config))
  return (models.create_generator(config.model, resolution, dtype,
                                  num_attributes),
          models.create_discriminator(config.model, resolution, dtype))


def create_optimizers(config: ml_collections.ConfigDict):
  """Returns (g_tx, d_tx, g_schedule, d_schedule)."""
  opt = config.optimizer
  g_schedule = optimizers.create_schedule(opt, opt.g_learning_rate,
                                          config.num_train_steps)
  d_schedule = optimizers.create_schedule(opt, opt.d_learning_rate,
                                          config.num_train_steps)
  g_tx = optimizers.create_optimizer(opt, g_schedule)
  d_tx = optimizers.create_optimizer(opt, d_schedule,
                                     updates_per_step=config.n_critic)
  return g_tx, d_tx, g_schedule, d_schedule


def _variables(params, stats) -> dict[str, Any]:
  """Flax variables from params and (possibly empty) non-trainable state."""
  return {'params': params, 'batch_stats': stats} if stats else {'params': params}


def init_train_state(rng: jax.Array, config: ml_collections.ConfigDict,
                     generator: nn.Module, discriminator: nn.Module,
                     g_tx: optax.GradientTransformation,
                     d_tx: optax.GradientTransformation) -> TrainState:
  """A fresh TrainState; pure, so `jax.eval_shape` gives its abstract shape."""
  g_rng, d_rng, run_rng = jax.random.split(rng, 3)
  resolution = config.dataset.resolution
  labels = _init_labels(config)
  z = conditioning.generator_input(
      jnp.zeros((1, config.model.latent_dim), jnp.float32), labels)
  # One critic input: a pack of d_pack images (PacGAN; 1 without packing).
  images = jnp.zeros((config.model.d_pack, resolution, resolution, 3),
                     jnp.float32)
  g_vars = dict(generator.init(g_rng, z, train=False))
  d_vars = dict(discriminator.init(d_rng, images, labels, train=False))
  g_params, d_params = g_vars.pop('params'), d_vars.pop('params')
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      d_params=d_params,
      g_opt_state=g_tx.init(g_params),
      d_opt_state=d_tx.init(d_params),
      # Copies, not aliases: the step donates the state's buffers.
      ema_params=jax.tree_util.tree_map(jnp.copy, g_params),
      batch_stats=_init_batch_stats(config, g_vars, d_vars),
      ema_batch_stats=jax.tree_util.tree_map(
          jnp.copy, g_vars.get('batch_stats', {})),
      rng=run_rng)


def _init_batch_stats(config, g_vars, d_vars) -> dict[str, Any]:
  """TrainState.batch_stats: the models' non-trainable state, and the
  critic's score averages when LeCam regularization uses them."""
  stats = {'generator': g_vars.get('batch_stats', {}),
           'discriminator': d_vars.get('batch_stats', {})}
  if config.loss.lecam_weight:
    stats['critic_scores'] = {'real': jnp.zeros((), jnp.float32),
                              'fake': jnp.zeros((), jnp.float32)}
  return stats


def _init_labels(config: ml_collections.ConfigDict) -> jax.Array | None:
  """Labels [1, A] to initialize a conditional run's models with, or None."""
  num_attributes = len(conditioning.conditioned_attributes(config))
  return jnp.zeros((1, num_attributes)) if num_attributes else None


@dataclasses.dataclass(frozen=True)
class GanUpdate:
  """The pieces of one GAN iteration, each a pure function of its arguments.

  `critic_phase` and `generator_phase` are the two halves of a step (the
  benchmarks time them apart); the other methods are what they are built of.
  Built by `make_train_phases`.

  Attributes:
    generator, discriminator: modules from `create_models`.
    g_tx, d_tx, g_schedule, d_schedule: from `create_optimizers`.
    config: the run's config.
    mesh: if given, latent vectors and generated images are kept split over
      its `data` axis, so every device generates its own share.
  """
  generator: nn.Module
  discriminator: nn.Module
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  g_schedule: optax.Schedule
  d_schedule: optax.Schedule
  config: ml_collections.ConfigDict
  mesh: Mesh | None = None

  def augment(self, images: jax.Array, rng: jax.Array) -> jax.Array:
    """DiffAugment: the critic sees real and fake through the same random,
    differentiable transforms, so gradients reach the generator through them."""
    policy = self.config.dataset.diffaugment
    return diff_augment(images, rng, policy) if policy else images

  def shard_batch(self, x: jax.Array) -> jax.Array:
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(
        x, partitioning.batch_sharding(self.mesh))

  def generate(self, g_params, g_stats, z, rng, labels=None):
    """Images [B, H, W, 3] in training mode, and the updated batch stats.

    `rng` feeds the generators that draw randomness while training
    (StyleGAN2's per-pixel noise and style mixing); the others ignore it.
    `labels` [B, A] (0/1) condition a conditional generator.
    """
    noise_rng, mixing_rng = jax.random.split(rng)
    z = conditioning.generator_input(z, labels)
    images, updates = self.generator.apply(
        _variables(g_params, g_stats), self.shard_batch(z), train=True,
        mutable=['batch_stats'],
        rngs={'noise': noise_rng, 'style_mix': mixing_rng})
    return self.shard_batch(images), updates.get('batch_stats', g_stats)

  def critic(self, d_params, d_stats, images, train: bool, labels=None):
    """Scores [B] and the updated critic stats (labels: conditional)."""
    scores, updates = self.discriminator.apply(
        _variables(d_params, d_stats), images, labels, train=train,
        mutable=['batch_stats'])
    return scores, updates.get('batch_stats', d_stats)

  def critic_loss(self, d_params, stats, real, fake, penalty_rng,
                  update_index, labels=None):
    """The critic's objective with penalties and drift; (loss, (stats, aux)).

    `stats`: TrainState.batch_stats, returned with the critic's entries
    updated (its batch statistics, and LeCam's score averages).

    Lazy regularization (Karras et al. 2020): with loss.r1_every = k > 1 the
    penalty is computed on every k-th critic update only (`update_index`
    counts them over the run), weighted k times to keep its strength.

    A conditional critic scores real and fake with the same `labels` (the
    fakes were generated with them), so every penalty sees one function.
    """
    loss_config = self.config.loss
    real_scores, d_stats = self.critic(d_params, stats['discriminator'], real,
                                       True, labels)
    fake_scores, d_stats = self.critic(d_params, d_stats, fake, True, labels)
    stats = {**stats, 'discriminator': d_stats}
    adversarial = losses.critic_loss(loss_config.name, real_scores,
                                     fake_scores, loss_config.label_smoothing)
    critic_fn = lambda x: self.critic(d_params, d_stats, x, False, labels)[0]
    every = loss_config.r1_every
    penalty_of = lambda weight: losses.penalty(
        loss_config.penalty, critic_fn, real, fake, penalty_rng, weight)
    if every == 1 or loss_config.penalty == 'none':
      penalty = penalty_of(loss_config.penalty_weight)
    else:
      penalty = jax.lax.cond(
          update_index % every == 0,
          lambda: penalty_of(loss_config.penalty_weight * every),
          lambda: jnp.zeros((), jnp.float32))
    drift = loss_config.drift_weight * jnp.mean(jnp.square(real_scores))
    d_real, d_fake = real_scores.mean(), fake_scores.mean()
    aux = dict(penalty=penalty, d_real=d_real, d_fake=d_fake,
               wasserstein=d_real - d_fake)
    loss = adversarial + penalty + drift
    if loss_config.lecam_weight:
      aux['lecam'], stats['critic_scores'] = losses.lecam_penalty(
          real_scores, fake_scores, stats['critic_scores'], update_index,
          loss_config.lecam_decay)
      loss += loss_config.lecam_weight * aux['lecam']
    if loss_config.consistency_weight:
      # In training mode, as the scores it compares with were computed.
      scores_of = lambda x: self.critic(d_params, d_stats, x, True, labels)[0]
      aux['consistency'] = self.consistency(
          scores_of, (real, real_scores), (fake, fake_scores),
          jax.random.fold_in(penalty_rng, 1))
      loss += loss_config.consistency_weight * aux['consistency']
    return loss, (stats, aux)

  def consistency(self, scores_of, real_and_scores, fake_and_scores, rng):
    """Consistency regularization of the critic: its scores of augmented
    copies of the real images (and, with loss.consistency_fakes, of the
    fakes: bCR) against its scores of the images themselves."""
    loss_config = self.config.loss
    pairs = [real_and_scores]
    if loss_config.consistency_fakes:
      pairs.append(fake_and_scores)
    total = jnp.zeros((), jnp.float32)
    for (images, scores), key in zip(pairs, jax.random.split(rng, 2)):
      augmented = diff_augment(images, key, loss_config.consistency_augment)
      total += losses.consistency_penalty(scores, scores_of(augmented))
    return total

  def critic_latents(self, rng: jax.Array, batch: int):
    """The latents and generator key of the critic update keyed by `rng`."""
    z_rng, *_, g_rng = jax.random.split(rng, 5)
    return (jax.random.normal(z_rng, (batch, self.config.model.latent_dim)),
            g_rng)

  def critic_update(self, g_params, g_stats, carry, inputs):
    """One critic update on one real batch: a `lax.scan` body."""
    real, labels, rng, update_index = inputs
    z, g_rng = self.critic_latents(rng, real.shape[0])
    fake = self.generate(g_params, g_stats, z, g_rng, labels)[0]
    return self.critic_update_on(carry, real, fake, labels, rng, update_index)

  def critic_update_on(self, carry, real, fake, labels, rng, update_index):
    """One critic update on given real and generated images; `carry` is
    (d_params, d_opt_state, TrainState.batch_stats)."""
    d_params, d_opt_state, stats = carry
    _, penalty_rng, real_aug_rng, fake_aug_rng, _ = jax.random.split(rng, 5)
    (loss, (stats, aux)), grads = jax.value_and_grad(
        self.critic_loss, has_aux=True)(
            d_params, stats, self.augment(real, real_aug_rng),
            self.augment(jax.lax.stop_gradient(fake), fake_aug_rng),
            penalty_rng, update_index, labels)
    updates, d_opt_state = self.d_tx.update(grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, updates)
    metrics = dict(aux, d_loss=loss, d_grad_norm=optax.tree.norm(grads))
    return (d_params, d_opt_state, stats), metrics

  def critic_phase(self, state: TrainState, images: jax.Array,
                   labels: jax.Array | None = None
                   ) -> tuple[TrainState, Metrics]:
    """n_critic critic updates, one per real batch of images [n_critic, B, ...]
    (and its labels [n_critic, B, A] in a conditional run)."""
    critic_rng, _, _ = _step_rngs(state)
    n_critic = images.shape[0]
    carry, metrics = jax.lax.scan(
        functools.partial(self.critic_update, state.g_params,
                          state.batch_stats['generator']),
        (state.d_params, state.d_opt_state, state.batch_stats),
        (images, labels, jax.random.split(critic_rng, n_critic),
         state.step * n_critic + jnp.arange(n_critic)))
    return self.after_critic(state, carry,
                             {k: v.mean() for k, v in metrics.items()})

  def after_critic(self, state, carry, metrics):
    """The state with the critic's (params, optimizer state, batch_stats)
    `carry`."""
    d_params, d_opt_state, batch_stats = carry
    state = state.replace(d_params=d_params, d_opt_state=d_opt_state,
                          batch_stats=batch_stats)
    metrics['d_lr'] = jnp.asarray(self.d_schedule(state.step), jnp.float32)
    return state, metrics

  def generator_phase(self, state: TrainState, real: jax.Array,
                      labels: jax.Array | None = None
                      ) -> tuple[TrainState, Metrics]:
    """One generator update on B fresh latents, the EMA, step + 1.

    `real` [B, H, W, C]: a real batch, scored only by the losses that pair
    each fake with a real (losses.PAIRED_LOSSES); its size is B. `labels`
    [B, A], its labels in a conditional run, condition the fakes too.
    """
    _, g_rng, g_aug_rng = _step_rngs(state)
    z_rng, noise_rng, real_aug_rng = jax.random.split(g_rng, 3)
    z = jax.random.normal(z_rng, (real.shape[0], self.config.model.latent_dim))
    real_scores = self.paired_real_scores(state, real, labels, real_aug_rng)

    def loss_fn(g_params):
      fake, g_stats = self.generate(g_params, state.batch_stats['generator'], z,
                                    noise_rng, labels)
      loss = self.generator_loss(state, fake, real_scores, labels, g_aug_rng)
      if not self.config.loss.path_length_weight:
        return loss, (g_stats, {})
      penalty, g_stats = self.lazy_path_length(
          g_params, g_stats, conditioning.generator_input(z, labels),
          jax.random.fold_in(g_rng, 1), state.step)
      return loss + penalty, (g_stats, {'g_penalty': penalty})

    (g_loss, (g_stats, aux)), g_grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.g_params)
    return self.apply_generator_update(state, g_grads, g_stats,
                                       dict(aux, g_loss=g_loss))

  def paired_real_scores(self, state, real, labels, rng):
    """The critic's stopped scores of `real`, for the PAIRED_LOSSES; or None."""
    if self.config.loss.name not in losses.PAIRED_LOSSES:
      return None
    scores, _ = self.critic(state.d_params, state.batch_stats['discriminator'],
                            self.augment(real, rng), True, labels)
    return jax.lax.stop_gradient(scores)

  def generator_loss(self, state, fake, real_scores, labels, aug_rng):
    """The generator's adversarial loss on `fake` under the state's critic."""
    scores, _ = self.critic(state.d_params, state.batch_stats['discriminator'],
                            self.augment(fake, aug_rng), True, labels)
    per_fake = losses.generator_losses(self.config.loss.name, scores,
                                       real_scores)
    if self.config.loss.top_k == 1.0:
      return per_fake.mean()
    k = losses.top_k_count(scores.shape[0], state.step, self.config.loss.top_k,
                           self.config.loss.top_k_half_life)
    # Gradients from the fakes the critic finds least real point away from
    # the nearest mode (Sinha et al. 2020): learn from the best k only.
    return losses.top_k_mean(per_fake, jax.lax.stop_gradient(scores), k)

  def apply_generator_update(self, state, g_grads, g_stats, metrics):
    """The generator's optimizer step, the EMA, step + 1."""
    updates, g_opt_state = self.g_tx.update(g_grads, state.g_opt_state,
                                            state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    average = functools.partial(_moving_average,
                                _ema_decay(self.config.ema_decay,
                                           self.config.ema_warmup, state.step))
    new_state = state.replace(
        step=state.step + 1, g_params=g_params, g_opt_state=g_opt_state,
        ema_params=average(state.ema_params, g_params),
        ema_batch_stats=average(state.ema_batch_stats, g_stats),
        batch_stats={**state.batch_stats, 'generator': g_stats})
    metrics = dict(metrics, g_grad_norm=optax.tree.norm(g_grads),
                   g_lr=jnp.asarray(self.g_schedule(state.step), jnp.float32))
    return new_state, metrics

  def shared_fakes_step(self, state: TrainState, images: jax.Array,
                        labels: jax.Array | None = None
                        ) -> tuple[TrainState, Metrics]:
    """A step (n_critic = 1) that generates once: the generator's update
    backpropagates through the fakes the critic was just updated on, as
    PyTorch's DCGAN example does, instead of generating from fresh latents.

    The critic update is the same as `critic_phase`'s; the generator update
    differs only in its latents, and the generator runs forward once instead
    of twice (configs/celeba32_cpu.py's models: 11% less time per step on a
    2-core CPU).
    """
    critic_rng, g_rng, g_aug_rng = _step_rngs(state)
    rng = jax.random.split(critic_rng, 1)[0]  # critic_phase's, for 1 update.
    real = images[0]
    labels = None if labels is None else labels[0]
    z, noise_rng = self.critic_latents(rng, real.shape[0])
    g_stats_before = state.batch_stats['generator']
    fake, pull_back, g_stats = jax.vjp(
        lambda g: self.generate(g, g_stats_before, z, noise_rng, labels),
        state.g_params, has_aux=True)
    carry, critic_metrics = self.critic_update_on(
        (state.d_params, state.d_opt_state, state.batch_stats),
        real, fake, labels, rng, state.step)
    state, critic_metrics = self.after_critic(state, carry, critic_metrics)
    real_scores = self.paired_real_scores(
        state, real, labels, jax.random.split(g_rng, 3)[2])
    g_loss, fake_grads = jax.value_and_grad(self.generator_loss, argnums=1)(
        state, fake, real_scores, labels, g_aug_rng)
    (g_grads,) = pull_back(fake_grads)
    state, g_metrics = self.apply_generator_update(state, g_grads, g_stats,
                                                   {'g_loss': g_loss})
    return state, {**critic_metrics, **g_metrics}

  def lazy_path_length(self, g_params, g_stats, z, rng, step):
    """StyleGAN2's path length regularization on every k-th generator update.

    `z`: the generator's input (joined with the labels when conditional).

    k = loss.path_length_every; the penalty is weighted k times
    loss.path_length_weight there and 0 elsewhere, on the first
    1/PATH_LENGTH_BATCH_SHRINK of the latents. Returns (penalty, g_stats
    with the updated 'path_length_mean').
    """
    loss_config = self.config.loss
    every = loss_config.path_length_every
    z = z[:max(1, z.shape[0] // losses.PATH_LENGTH_BATCH_SHRINK)]
    mixing_rng, noise_rng, projection_rng = jax.random.split(rng, 3)
    variables = _variables(g_params, g_stats)

    def regularize():
      # Styles as in training (style mixing), without moving w_avg again.
      ws, _ = self.generator.apply(
          variables, z, train=True, method='map_to_ws',
          mutable=['batch_stats'], rngs={'style_mix': mixing_rng})
      synthesize = lambda ws: self.generator.apply(
          variables, ws, method='synthesize', rngs={'noise': noise_rng})
      penalty, mean = losses.path_length_penalty(
          synthesize, ws, projection_rng, g_stats['path_length_mean'])
      return (penalty * loss_config.path_length_weight * every,
              {**g_stats, 'path_length_mean': mean})

    if every == 1:
      return regularize()
    return jax.lax.cond(step % every == 0, regularize,
                        lambda: (jnp.zeros((), jnp.float32), g_stats))


def _step_rngs(state: TrainState) -> jax.Array:
  """Keys for (critic, generator, generator augmentation) of this step."""
  return jax.random.split(jax.random.fold_in(state.rng, state.step), 3)


def _ema_decay(decay: float, warmup: float, step: jax.Array) -> jax.Array:
  # Warm-up: the average forgets the random init quickly, and until the
  # decay is reached it spans a fixed fraction of the run, about t/(K-1).
  return jnp.minimum(decay, (1.0 + step) / (warmup + step))


def _moving_average(decay, average, new):
  return jax.tree_util.tree_map(
      lambda a, x: decay * a + (1.0 - decay) * x, average, new)


def make_train_phases(config: ml_collections.ConfigDict,
                      generator: nn.Module, discriminator: nn.Module,
                      g_tx: optax.GradientTransformation,
                      d_tx: optax.GradientTransformation,
                      g_schedule: optax.Schedule, d_schedule: optax.Schedule,
                      mesh: Mesh | None = None):
  """The two halves of a step, as pure functions (not yet jitted).

  Returns:
    critic_phase(state, images [n_critic, B, H, W, C]) -> (state, metrics):
      n_critic critic updates in a lax.scan, each on its own real batch.
    generator_phase(state, real [B, H, W, C]) -> (state, metrics): one
      generator update on B fresh latents (real images are scored by the
      paired losses only), the EMA update, and step + 1.
  """
  update = _gan_update(config, generator, discriminator, g_tx, d_tx,
                       g_schedule, d_schedule, mesh)
  return update.critic_phase, update.generator_phase


def _gan_update(config, generator, discriminator, g_tx, d_tx, g_schedule,
                d_schedule, mesh=None) -> GanUpdate:
  return GanUpdate(generator, discriminator, g_tx, d_tx, g_schedule,
                   d_schedule, config, mesh)


def make_train_step(*args, **kwargs
                    ) -> Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]:
  """Builds `train_step(state, images, labels=None) -> (state, metrics)`
  (not yet jitted).

  Takes the arguments of `make_train_phases`. `images` is
  [n_critic, B, H, W, C] in [-1, 1]; `labels`, [n_critic, B, A] of 0/1, their
  attributes in a conditional run; metrics are float32 scalars that stay on
  device until the caller fetches them. With `config.share_fakes` the step
  is `GanUpdate.shared_fakes_step`.
  """
  update = _gan_update(*args, **kwargs)
  if update.config.share_fakes:
    return update.shared_fakes_step
  critic_phase, generator_phase = update.critic_phase, update.generator_phase

  def train_step(state: TrainState, images: jax.Array,
                 labels: jax.Array | None = None):
    state, critic_metrics = critic_phase(state, images, labels)
    state, generator_metrics = generator_phase(
        state, images[-1], None if labels is None else labels[-1])
    return state, {**critic_metrics, **generator_metrics}

  return train_step


def sample_chunk() -> int:
  """Latents per generator pass when sampling: 8 is fastest on a CPU; an
  accelerator needs larger batches to be busy."""
  return 8 if jax.default_backend() == 'cpu' else 64


def make_sample_fn(generator: nn.Module,
                   chunk: int | None = None) -> Callable[..., jax.Array]:
  """`sample(params, g_stats, z, truncation=1.0, labels=None) -> images
  [N, H, W, 3]`.

  Inference mode; `truncation` is psi of the truncation trick (1 = none);
  `labels` [N, A] (0/1) are a conditional generator's attributes.

  The image of a latent does not depend on the batch it is drawn in, bit for
  bit: XLA's convolutions round differently at different batch sizes, so the
  generator always runs on chunks of `chunk` (default `sample_chunk()`)
  latents, one after the other (`lax.map`; z is padded with zeros to whole
  chunks). A grid, a folder of samples and an evaluation of one seed then
  agree image for image, whatever their batch sizes.
  """
  chunk = chunk or sample_chunk()
  # Truncation where the generator's latents are Gaussian around a known
  # mean: in w for style-based generators, else in z.
  in_w_space = getattr(generator, 'truncation_space', 'z') == 'w'

  def images_of(params, g_stats, z, labels, truncation):
    variables = _variables(params, g_stats)
    if in_w_space:
      return generator.apply(
          variables, conditioning.generator_input(z, labels), train=False,
          truncation_psi=truncation)
    z = latents.truncate(z, truncation)  # z only, never the labels.
    return generator.apply(variables, conditioning.generator_input(z, labels),
                           train=False)

  def in_chunks(x, chunks):
    x = jnp.pad(x, ((0, chunks * chunk - x.shape[0]), (0, 0)))
    return x.reshape(chunks, chunk, x.shape[-1])

  def sample(params, g_stats, z, truncation=1.0, labels=None):
    num = z.shape[0]
    chunks = -(-num // chunk)
    labels = None if labels is None else in_chunks(labels, chunks)
    images = jax.lax.map(
        lambda zy: images_of(params, g_stats, *zy, truncation),
        (in_chunks(z, chunks), labels))
    return images.reshape(-1, *images.shape[2:])[:num]
  return sample


@dataclasses.dataclass(frozen=True)
class Program:
  """The compiled functions of a run and the shardings they agree on.

  Attributes:
    init: rng -> TrainState, born sharded (params replicated).
    step: (state, images [n_critic, B, H, W, C]) -> (state, metrics), or for
      a conditional run (state, (images, labels [n_critic, B, A])); jitted
      with the state donated, the batch split over the `data` axis.
    sample: (params, g_stats, z [N, latent], truncation=1.0, labels=None)
      -> images [N, H, W, 3].
    abstract_state: TrainState of ShapeDtypeStructs (Orbax's restore target).
    state_sharding: TrainState of NamedShardings.
    generator, discriminator: the modules.
    attributes: the attributes a conditional run is conditioned on (else
      empty).
    standing_stats: with `config.ema_standing_stats`, (params, stats, key)
      -> the generator's standing batch-norm statistics for `params`
      (`standing_stats.make_standing_stats_fn`); else None.
    lookahead_every, lookahead_sync: with `optimizer.lookahead_every` = k,
      k and state -> state with both players' Lookahead synchronization
      (`optimizers.lookahead_sync`), jitted with the state donated; else 0
      and None. Training loops call `after_step`, which applies it.
  """
  init: Callable[[jax.Array], TrainState]
  step: Callable[[TrainState, jax.Array], tuple[TrainState, Metrics]]
  sample: Callable[..., jax.Array]
  abstract_state: Any
  state_sharding: Any
  generator: nn.Module
  discriminator: nn.Module
  attributes: tuple[str, ...] = ()
  standing_stats: Callable[..., Any] | None = None
  lookahead_every: int = 0
  lookahead_sync: Callable[[TrainState], TrainState] | None = None

  def after_step(self, state: TrainState, step: int) -> TrainState:
    """`state` after generator step `step`: synchronized when Lookahead's
    k-th step has come, so a checkpoint at any step resumes exactly."""
    if self.lookahead_every and step % self.lookahead_every == 0:
      return self.lookahead_sync(state)
    return state


def _lookahead_sync_fn(alpha: float):
  def sync(state: TrainState) -> TrainState:
    g_params, g_opt_state = optimizers.lookahead_sync(
        state.g_params, state.g_opt_state, alpha)
    d_params, d_opt_state = optimizers.lookahead_sync(
        state.d_params, state.d_opt_state, alpha)
    return state.replace(g_params=g_params, g_opt_state=g_opt_state,
                         d_params=d_params, d_opt_state=d_opt_state)
  return sync


def build_program(config: ml_collections.ConfigDict, mesh: Mesh) -> Program:
  """Models, optimizers and jitted init/step/sample for `config` on `mesh`."""
  generator, discriminator = create_models(config)
  g_tx, d_tx, g_schedule, d_schedule = create_optimizers(config)
  init_fn = functools.partial(
      init_train_state, config=config, generator=generator,
      discriminator=discriminator, g_tx=g_tx, d_tx=d_tx)
  abstract_state = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  replicated = partitioning.replicated(mesh)
  state_sharding = jax.tree_util.tree_map(lambda _: replicated, abstract_state)
  train_step = make_train_step(config, generator, discriminator, g_tx, d_tx,
                               g_schedule, d_schedule, mesh)

  def step(state, batch):
    # batch: images, or (images, labels) for a conditional run; one
    # sharding (split along axis 1) covers both.
    return train_step(state, *(batch if isinstance(batch, tuple) else
                               (batch,)))

  step = jax.jit(
      step,
      in_shardings=(state_sharding, partitioning.batch_sharding(mesh, 1)),
      out_shardings=(state_sharding, replicated),
      donate_argnums=0)
  return Program(
      init=jax.jit(init_fn, out_shardings=state_sharding),
      step=step,
      sample=jax.jit(make_sample_fn(generator), out_shardings=replicated),
      abstract_state=abstract_state,
      state_sharding=state_sharding,
      generator=generator,
      discriminator=discriminator,
      attributes=conditioning.conditioned_attributes(config),
      standing_stats=jax.jit(
          standing_stats_lib.make_standing_stats_fn(
              generator, config.model.latent_dim, config.batch_size,
              config.ema_standing_stats, mesh),
          out_shardings=replicated) if config.ema_standing_stats else None,
      lookahead_every=config.optimizer.lookahead_every,
      lookahead_sync=jax.jit(
          _lookahead_sync_fn(config.optimizer.lookahead_alpha),
          in_shardings=(state_sharding,), out_shardings=state_sharding,
          donate_argnums=0) if config.optimizer.lookahead_every else None)
