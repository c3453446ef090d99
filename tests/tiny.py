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
