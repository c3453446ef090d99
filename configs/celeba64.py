"""The 64x64 face recipe for one GPU: StyleGAN2 + DiffAugment on ~10k faces.

  python -m input_pipeline.prepare --src=celeba_10k --out=PREPARED \
      --resolution=64 --crop=celeba
  python main.py --config=configs/celeba64.py --workdir=DIR \
      --config.dataset.source=folder --config.dataset.path=PREPARED

`configs/stylegan2.py` at 64x64 with what a GPU affords and a CPU does not:
generator and critic twice as wide (64 channels at 64x64, 512 at 4x4),
batch 64, StyleGAN2's path length regularization (weight 2, every 4th
generator update), and FID of 10,000 EMA samples every 5,000 steps in
TensorBoard (`eval/fid`), keeping the best checkpoint in DIR/best.

Measured cost (README, "64x64 on one GPU"): on one H200 the step runs at
32.7 updates a second (2,090 images/s) after 1.6 minutes of loading and
compiling, and reached FID 32.7 (5,000 EMA samples against the 10,000
training faces) after 6,561 updates, 5 minutes from launch. The 80,000
steps, 5.1M images, where the StyleGAN2 + DiffAugment low-data results
level off, are then about 41 minutes plus the 16 FID evaluations of 10,000
samples (seconds each there); measured with benchmarks/quality_in_memory.py,
whose images are in memory: main.py's tf.data pipeline has to deliver the
same 2,090 images/s. Stop earlier with --config.max_train_minutes.
"""

from configs import default
from configs import stylegan2


def get_config(arg=None):
  config = stylegan2.get_config(arg)  # 64x64 unless res= says otherwise.
  if not default.parse_arg(arg).get('quick'):
    config.model.g_width = 64
    config.model.d_width = 64
    config.num_train_steps = 80_000
  config.batch_size = 64
  config.loss.penalty_weight = stylegan2.r1_gamma(config.dataset.resolution,
                                                  config.batch_size)
  config.loss.path_length_weight = 2.0
  config.loss.path_length_every = 4
  config.eval_every = 5_000
  config.eval_num_samples = 10_000
  config.log_every = 500
  config.sample_every = 5_000
  config.checkpoint_every = 5_000
  return config
