r"""What a latent edit changes: flip rate against strength, and the rest.

For each attribute with a fitted direction (`python -m facegan_jax.attributes
directions`), N latents of a seed are moved along it by each strength; the
classifier reads the edited faces. Per strength it prints

  flip_rate   share of faces whose reading of the attribute changed towards
              the edit (absent -> present for s > 0, present -> absent for
              s < 0), among those that could change that way
  others_kept share of the other attributes' readings left unchanged (1 is
              a perfectly disentangled edit)

one JSON line per attribute, then a summary line.

  python benchmarks/attribute_edits.py --workdir=RUN --classifier=DIR \
      --attributes=Smiling,Male,Eyeglasses,Blond_Hair,Young
"""

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from facegan_jax import attribute_classifier
from facegan_jax import attributes as attributes_tool
from facegan_jax import directions as directions_lib
# pylint: enable=g-import-not-at-top,wrong-import-position


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='a run with directions.npz')
  parser.add_argument('--classifier', required=True)
  parser.add_argument('--attributes', default='Smiling,Male,Eyeglasses,'
                      'Blond_Hair,Young')
  parser.add_argument('--strengths', default='-3,-2,-1,1,2,3')
  parser.add_argument('--num', type=int, default=500, help='latents')
  parser.add_argument('--seed', type=int, default=1,
                      help='latent stream (not the one the directions were '
                           'fitted on, seed 0 by default)')
  return parser


def readings(run, classifier, z: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The classifier's 0/1 readings [N, A] of the images of latents z."""
  return (attribute_classifier.predict_probabilities(
      classifier, run.images(z, labels)) > 0.5)


def edit_effects(before: np.ndarray, after: np.ndarray, index: int,
                 strength: float) -> dict[str, float]:
  """flip_rate and others_kept of one edit (see the module docstring)."""
  could = ~before[:, index] if strength > 0 else before[:, index]
  flipped = (after[:, index] != before[:, index]) & could
  others = np.delete(after == before, index, axis=1)
  return {'flip_rate': float(flipped.sum() / max(could.sum(), 1)),
          'could_flip': int(could.sum()),
          'others_kept': float(others.mean())}


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  classifier, _ = attribute_classifier.load(args.classifier)
  run = attributes_tool._Run(  # pylint: disable=protected-access
      args.workdir, None, True, 64, classifier.resolution)
  names, directions = directions_lib.load_saved(args.workdir)
  z = run.latents(args.num, args.seed)
  labels = (run.label_vectors(args.num, args.seed) if run.attributes else
            None)
  before = readings(run, classifier, z, labels)
  strengths = [float(s) for s in args.strengths.split(',')]
  summary = {}
  for name in args.attributes.split(','):
    index, direction = classifier.names.index(name), directions[names.index(name)]
    rows = {}
    for strength in strengths:
      edited = np.stack([directions_lib.edit_latents(face, direction,
                                                     [strength])[0]
                         for face in z])
      rows[strength] = edit_effects(
          before, readings(run, classifier, edited, labels), index, strength)
    summary[name] = rows
    print(json.dumps({'attribute': name, 'present_before': float(
        before[:, index].mean()), 'by_strength': rows}), flush=True)
  print(json.dumps({'workdir': os.path.abspath(args.workdir),
                    'classifier': os.path.abspath(args.classifier),
                    'num': args.num, 'seed': args.seed,
                    'machine': platform.processor() or platform.machine(),
                    'mean_flip_rate': {
                        s: round(float(np.mean([summary[n][s]['flip_rate']
                                                for n in summary])), 3)
                        for s in strengths},
                    'mean_others_kept': {
                        s: round(float(np.mean([summary[n][s]['others_kept']
                                                for n in summary])), 3)
                        for s in strengths}}))


if __name__ == '__main__':
  main()
