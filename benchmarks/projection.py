r"""How well `generate --project` reconstructs faces the model never saw.

For each photo (prepared as the run's dataset was), it projects with the
tool's default settings and compares the reconstruction with the target,
beside two baselines: the best of the random candidates the search starts
from (step 0), and a random latent's image. Distances:

  psnr_db          pixels in [-1, 1] (higher is better)
  perceptual       the projection's own loss term: unit-normalized FID
                   Inception maps (Mixed_5d, Mixed_6e) at 299x299
  pool3_l2         L2 distance of the FID Inception pool3 features (the space
                   FID is measured in)

A generated image (whose latent is known) is projected too, as a check that
the search finds what exists. One JSON line per image, then a summary line.

  python benchmarks/projection.py --workdir=RUN --photos=HELD_OUT_DIR \
      [--num=8] [--steps=300]
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import numpy as np

# The repository's packages before benchmarks/ (its input_pipeline.py).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a training run')
  parser.add_argument('--photos', required=True,
                      help='folder of photos the run did not train on')
  parser.add_argument('--num', type=int, default=8, help='photos used')
  parser.add_argument('--steps', type=int, default=300, help='Adam steps')
  parser.add_argument('--perceptual_size', type=int, default=299)
  parser.add_argument('--seed', type=int, default=0)
  return parser


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from facegan_jax import metrics
  from facegan_jax import projection
  from facegan_jax import saved_run
  from facegan_jax.evaluate import list_images
  from facegan_jax.metrics import inception
  # pylint: enable=g-import-not-at-top

  config, program, state, meta = saved_run.restore_run(args.workdir)
  render = projection.render_fn(config, program, state)
  weights = metrics.find_weights()
  extractor = metrics.feature_extractor(weights=weights)
  settings = projection.ProjectionSettings(
      steps=args.steps, perceptual_size=args.perceptual_size)
  features = jax.jit(lambda params, images: projection.perceptual_features(
      params, images, input_size=inception.INPUT_SIZE))
  latent_dim = config.model.latent_dim

  def distances(image, target):
    pair = np.stack([image, target]).astype(np.float32)
    maps = features(weights.params, pair)
    perceptual = projection.perceptual_distance(
        [m[:1] for m in maps], [m[1:] for m in maps])
    pool3, _ = extractor(pair)
    return {'psnr_db': projection.psnr(image, target),
            'perceptual': float(perceptual[0]),
            'pool3_l2': float(np.linalg.norm(pool3[0] - pool3[1]))}

  key = jax.random.PRNGKey(args.seed)
  random_images = np.asarray(render(jax.random.normal(
      jax.random.fold_in(key, 1), (8, latent_dim))))
  known_z = jax.random.normal(jax.random.fold_in(key, 2), (1, latent_dim))
  targets = [('generated', np.asarray(render(known_z))[0])]
  for path in list_images(args.photos, 'photos')[:args.num]:
    photo = projection.load_photo(config, path)
    targets.append((os.path.basename(path),
                    photo.astype(np.float32) / 127.5 - 1))

  rows, seconds = [], []
  for name, target in targets:
    started = time.monotonic()
    result = projection.project(render, target, latent_dim,
                                jax.random.fold_in(key, 3), settings,
                                weights.params)
    seconds.append(time.monotonic() - started)
    row = {'image': name, 'seconds': round(seconds[-1], 1),
           'reconstruction': distances(result.image, target),
           'start': distances(result.snapshots[0], target),
           'random_latent': {k: float(np.mean([distances(r, target)[k]
                                               for r in random_images]))
                             for k in ('psnr_db', 'perceptual', 'pool3_l2')}}
    if name == 'generated':
      z = np.asarray(known_z)[0]
      row['latent_cosine'] = float(result.latent @ z / np.linalg.norm(
          result.latent) / np.linalg.norm(z))
    rows.append(row)
    print(json.dumps(row), flush=True)

  photos = [row for row in rows if row['image'] != 'generated']
  summary = {
      'summary': f'{len(photos)} held-out photos, mean',
      **{f'{part}_{k}': round(float(np.mean([r[part][k] for r in photos])),
                              4)
         for part in ('reconstruction', 'start', 'random_latent')
         for k in ('psnr_db', 'perceptual', 'pool3_l2')},
      'seconds_per_photo': round(float(np.mean(seconds[1:])), 1),
      'steps': args.steps, 'perceptual_size': args.perceptual_size,
      'checkpoint_step': meta['step'], 'workdir': os.path.abspath(
          args.workdir),
      'resolution': config.dataset.resolution,
      'machine': f'{platform.machine()} {os.cpu_count()} CPUs, '
                 f'{jax.devices()[0].device_kind}',
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
  }
  print(json.dumps(summary), flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
