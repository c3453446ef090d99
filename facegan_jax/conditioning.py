"""Attribute conditioning: which attributes, how models see them, real labels.

A conditional run names attributes in `config.dataset.attributes` (e.g.
'Smiling,Male', or 'all' before the loop resolves it against the data). Its
label vectors are 0/1 per attribute, in that order. Models see them as
+-1 (so 'off' is a signal too):

- generator: the input is z joined with the signed labels, [B, Z + A]. The
  first layer of every family is linear in its input (DCGAN's and the
  ResNet's projection, StyleGAN2's embedding into the mapping network), so
  this is an embedding of the labels added to that of z.
- critic: a projection head (Miyato & Koyama 2018), score(x, y) =
  psi(phi(x)) + <V y, phi(x)>, with phi(x) the features under the last
  linear layer; `Projection` below.

During training the fakes take the labels of the real batch beside them:
draws from the data's own label vectors, correlations kept. Tools that
sample a finished run draw from its label bank (`WORKDIR/label_bank.npz`,
every real label vector, written when training starts).

No TensorFlow here: models and the train step import this module.
"""

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

LABEL_BANK = 'label_bank.npz'
ALL = 'all'


def parse_attributes(spec: str, available: Sequence[str]) -> tuple[str, ...]:
  """The attributes named by `spec` ('' = none, 'all', or 'A,B'), checked.

  Raises:
    ValueError: a name is not in `available` (lists the valid ones), a name
      repeats, or the data has no attributes at all.
  """
  spec = spec.strip()
  if not spec:
    return ()
  if not available:
    raise ValueError(
        f"dataset.attributes={spec!r}, but the dataset has no attribute "
        "labels: prepare the folder with --labels=FILE (e.g. CelebA's "
        "list_attr_celeba.txt), or use dataset.source='tfds' with celeb_a, "
        "or set dataset.attributes='' for an unconditional model.")
  if spec == ALL:
    return tuple(available)
  names = tuple(name.strip() for name in spec.split(','))
  unknown = [name for name in names if name not in available]
  if unknown:
    raise ValueError(
        f'dataset.attributes names {", ".join(map(repr, unknown))}, not '
        f'attributes of the dataset; valid: {", ".join(available)} (or '
        f"'{ALL}').")
  if len(set(names)) != len(names):
    raise ValueError(f'dataset.attributes={spec!r} names an attribute twice.')
  return names


def conditioned_attributes(config: ml_collections.ConfigDict
                           ) -> tuple[str, ...]:
  """The attributes a run's models are conditioned on (empty: none).

  `config.dataset.attributes` must already be resolved to names (the loop
  replaces 'all' with the dataset's names before it builds anything).
  """
  spec = config.dataset.attributes.strip()
  if spec == ALL:
    raise ValueError(
        "dataset.attributes='all' is resolved against the dataset before "
        'the models are built (input_pipeline.resolve_attributes).')
  return tuple(name.strip() for name in spec.split(',')) if spec else ()


def signed(labels: jax.Array) -> jax.Array:
  """0/1 labels -> -1/+1 float32."""
  return 2.0 * jnp.asarray(labels, jnp.float32) - 1.0


def generator_input(z: jax.Array, labels: jax.Array | None) -> jax.Array:
  """z [B, Z] joined with signed labels [B, A] -> [B, Z + A] (z if None)."""
  if labels is None:
    return z
  return jnp.concatenate([z, signed(labels).astype(z.dtype)], axis=-1)


class Projection(nn.Module):
  """The projection term <V y, phi(x)> of a conditional critic.

  Attributes:
    dtype: compute dtype.
  """
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, labels: jax.Array) -> jax.Array:
    """features [B, ...] (flattened), labels [B, A] 0/1 -> [B] float32."""
    features = features.reshape(features.shape[0], -1)
    embedded = nn.Dense(features.shape[-1], use_bias=False, dtype=self.dtype,
                        kernel_init=nn.initializers.normal(0.02),
                        name='embed')(signed(labels))
    return jnp.sum((embedded * features).astype(jnp.float32), axis=-1)


def with_projection(scores: jax.Array, features: jax.Array,
                    labels: jax.Array | None, dtype) -> jax.Array:
  """A critic's scores [B] (float32), plus the projection term if `labels`.

  Call it inside the critic's compact `__call__`: the head's parameters are
  the critic's ('projection').
  """
  scores = scores.reshape(scores.shape[0]).astype(jnp.float32)
  if labels is None:
    return scores
  return scores + Projection(dtype, name='projection')(features, labels)


def save_label_bank(workdir: str | os.PathLike, names: Sequence[str],
                    labels: np.ndarray) -> None:
  """Writes the real label vectors [N, A] (0/1) a run samples with."""
  path = epath.Path(workdir) / LABEL_BANK
  with path.open('wb') as stream:
    np.savez(stream, names=np.asarray(names, dtype=str),
             labels=np.asarray(labels, np.uint8))


def load_label_bank(workdir: str | os.PathLike,
                    names: Sequence[str] | None = None) -> np.ndarray:
  """The run's real label vectors, int32 [N, A], in `names` order.

  Args:
    workdir: the run's workdir (or its best/ or checkpoints/ folder).
    names: the attributes wanted (default: all the bank holds).

  Raises:
    ValueError: no bank (not a conditional run), or a name it lacks.
  """
  folder = epath.Path(workdir)
  if folder.name in ('best', 'checkpoints'):
    folder = folder.parent
  path = folder / LABEL_BANK
  if not path.exists():
    raise ValueError(
        f'{path} does not exist: {workdir} is not a conditional run (train '
        'with --config.dataset.attributes=... to condition on attributes).')
  with path.open('rb') as stream:
    bank = np.load(stream)
    stored, labels = [str(n) for n in bank['names']], bank['labels']
  if names is None:
    return labels.astype(np.int32)
  missing = [n for n in names if n not in stored]
  if missing:
    raise ValueError(f'{path} has no labels for {", ".join(missing)}; it '
                     f'holds {", ".join(stored)}.')
  return labels[:, [stored.index(n) for n in names]].astype(np.int32)


def label_bank_of(workdir: str | os.PathLike,
                  attributes: Sequence[str]) -> np.ndarray | None:
  """`load_label_bank(workdir, attributes)` for a conditional run, else None."""
  return load_label_bank(workdir, attributes) if attributes else None


def draw_labels(bank: np.ndarray, seed: int, count: int) -> np.ndarray:
  """`count` label vectors drawn with replacement from a bank, float32.

  Vector i depends on (seed, i) only, like latent i of a seed.
  """
  indices = np.asarray(jax.vmap(
      lambda i: jax.random.randint(jax.random.fold_in(
          jax.random.PRNGKey(seed), i), (), 0, len(bank)))(
              jnp.arange(count)))
  return bank[indices].astype(np.float32)


def toggle_grid_labels(base: np.ndarray) -> np.ndarray:
  """Label rows for a grid showing each attribute off and on.

  Args:
    base: [N, A] 0/1, the labels of N latents.

  Returns:
    float32 [2 * A * N, A]: for each attribute a, the N rows of `base` with
    a = 0, then the same with a = 1.
  """
  rows = []
  for a in range(base.shape[1]):
    for value in (0.0, 1.0):
      labels = np.array(base, np.float32)
      labels[:, a] = value
      rows.append(labels)
  return np.concatenate(rows)
