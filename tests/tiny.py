"""Tiny configs shared by the tests: 32x32, narrow models, small batches."""

from configs import wgan_gp


def tiny_config(**overrides):
  """WGAN-GP at 32x32 with 8-channel models: compiles and runs in seconds."""
  config = wgan_gp.get_config('res=32')
  config.model.g_width = 8
  config.model.d_width = 8
  config.model.latent_dim = 16
  config.batch_size = 8
  config.n_critic = 2
  config.num_train_steps = 3
  config.log_every = 1
  config.sample_every = 2
  config.checkpoint_every = 2
  config.num_samples = 4
  config.dataset.num_images = 64
  config.dataset.shuffle_buffer = 64
  config.lock()  # A mistyped override fails instead of adding a key.
  config.update_from_flattened_dict(overrides)
  return config


def save_untrained_run(workdir, config, step: int, label_boost: float = 1.0):
  """(workdir, config, program, state): a fresh state saved as step `step`.

  Its EMA generator's output layer is scaled up so that a DCGAN's images
  vary visibly with z; `label_boost` scales the labels' rows of a
  conditional DCGAN's first layer, so that they matter as much.
  """
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  import numpy as np
  from facegan_jax import checkpointing
  from facegan_jax import partitioning
  from facegan_jax import train
  from facegan_jax import train_step
  # pylint: enable=g-import-not-at-top
  program = train_step.build_program(config, partitioning.create_mesh())
  state = program.init(jax.random.PRNGKey(0))
  ema = jax.device_get(state.ema_params)
  ema['to_rgb']['kernel'] = ema['to_rgb']['kernel'] * 3000
  kernel = np.array(ema['project']['kernel'])
  kernel[config.model.latent_dim:] *= label_boost
  ema['project']['kernel'] = kernel
  state = state.replace(ema_params=jax.device_put(ema),
                        step=jnp.asarray(step, state.step.dtype))
  with checkpointing.Checkpointer(workdir / 'checkpoints') as checkpointer:
    meta = train._run_metadata(config, step)  # pylint: disable=protected-access
    checkpointer.save(state, meta, force=True)
  return workdir, config, program, state


def grid_cells(grid, rows, cols, side=32):
  """The images of an image_grid (1-pixel gaps) as [rows, cols, H, W, 3]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.stack([[grid[1 + r * (side + 1):(r + 1) * (side + 1),
                         1 + c * (side + 1):(c + 1) * (side + 1)]
                    for c in range(cols)] for r in range(rows)])
