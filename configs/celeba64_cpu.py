"""Best faces at 64x64 in 2 hours of a 2-core CPU (issue 14's longer budget).

  python -m input_pipeline.prepare --src=celeba_10k --out=PREPARED \
      --resolution=64 --crop=celeba
  python main.py --config=configs/celeba64_cpu.py --workdir=DIR \
      --config.dataset.source=folder --config.dataset.path=PREPARED

The 32x32 recipe (`celeba32_cpu.py`: DCGAN, non-saturating loss, one critic
update per generator update, EMA generator, no DiffAugment) one resolution
up, at width 48 instead of 64: on this CPU an update takes 0.50 s at width
48 against 1.18 s at 64 and 0.27 s at 32 (benchmarks/train_step.py), so two
hours buy ~14,000 updates, ~90 passes over the 10,000 faces. At 32x32 FID
followed the update count, and in 30 minutes StyleGAN2 at 64x64 was still
in its blurred early phase (README, "64x64, 30 minutes"), so the fast DCGAN
is the better use of two CPU hours. Learning rates are constant: a run
stopped early is the same run, only shorter.
"""

from configs import celeba32_cpu
from configs import default


def get_config(arg=None):
  config = celeba32_cpu.get_config()
  config.dataset.resolution = 64
  config.batch_size = 64  # As measured (the 32x32 recipe moved to 16 later).
  config.model.g_width = 48
  config.model.d_width = 48
  config.ema_decay = 0.999  # As measured.
  config.max_train_minutes = 119.0  # Leaves a minute for the final checkpoint.
  config.log_every = 100
  config.sample_every = 1000
  config.checkpoint_every = 500  # ~4 minutes: FID against time has its marks.
  return default.apply_args(config, arg)
