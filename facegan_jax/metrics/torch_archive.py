"""Reads PyTorch checkpoints and TorchScript archives without torch, safely.

Both `torch.save` and `torch.jit.save` store pickles, and unpickling calls
whatever callables the pickle names: a checkpoint downloaded from the internet
can run code. This reader resolves only the few names that tensors, storages
and TorchScript module records need, maps each to an inert builder defined
here, and refuses every other name with `UnsafeArchiveError` before anything
is called. It never imports torch.

Formats read:
  * zip archives (torch.save since 1.6, torch.jit.save): `<root>/data.pkl`
    plus one raw little-endian file per storage, `<root>/data/<key>`;
  * the legacy stream (torch.save before 1.6): magic number, protocol,
    system info, the object pickle, the list of storage keys, then each
    storage as an int64 element count followed by its bytes.
"""

import collections
from collections.abc import Callable
import io
import os
import pickle
import zipfile
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

# torch storage class name -> numpy dtype of its elements.
_STORAGE_DTYPES = {
    'FloatStorage': np.dtype(np.float32),
    'DoubleStorage': np.dtype(np.float64),
    'HalfStorage': np.dtype(np.float16),
    'BFloat16Storage': np.dtype(jnp.bfloat16),
    'LongStorage': np.dtype(np.int64),
    'IntStorage': np.dtype(np.int32),
    'ShortStorage': np.dtype(np.int16),
    'CharStorage': np.dtype(np.int8),
    'ByteStorage': np.dtype(np.uint8),
    'BoolStorage': np.dtype(np.bool_),
}


class UnsafeArchiveError(pickle.UnpicklingError):
  """The archive names a callable or record type this reader does not allow."""


class _StorageType:
  """Stands for a torch.<X>Storage class named in a pickle: only a dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _Storage:
  """A flat typed buffer; `array` is filled when its bytes have been read."""

  def __init__(self, dtype: np.dtype, numel: int):
    self.dtype = dtype
    self.numel = numel
    self.array: np.ndarray | None = None


class _StorageView:
  """Legacy-format view of `numel` elements of `root` starting at `offset`."""

  def __init__(self, root: _Storage, offset: int, numel: int):
    self.root = root
    self.offset = offset
    self.numel = numel


class _LazyTensor:
  """A tensor record whose storage bytes may not have been read yet."""

  def __init__(self, storage, offset: int, size, stride):
    self.storage = storage
    self.offset = int(offset)
    self.size = tuple(int(s) for s in size)
    self.stride = tuple(int(s) for s in stride)


class ScriptModuleRecord:
  """Inert stand-in for a TorchScript class (`__torch__.*`) in data.pkl.

  Holds the attributes the pickle sets (submodules, tensors, ints, ...) and
  nothing else; the TorchScript code in the archive is never read.
  """

  torch_type: str = ''

  def __setstate__(self, state: Any) -> None:
    if isinstance(state, dict):
      self.__dict__.update(state)
    else:
      self.__dict__['state'] = state


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_args):
  return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused_args):
  return data


def _as_list(values):
  return list(values)


def _restore_type_tag(value, unused_type_str):
  return value


# (module, name) -> what the pickle gets instead. Nothing else resolves.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.jit._pickle', 'build_intlist'): _as_list,
    ('torch.jit._pickle', 'build_doublelist'): _as_list,
    ('torch.jit._pickle', 'build_boollist'): _as_list,
    ('torch.jit._pickle', 'build_tensorlist'): _as_list,
    ('torch.jit._pickle', 'restore_type_tag'): _restore_type_tag,
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only `_ALLOWED_GLOBALS`, storages, `__torch__`."""

  def __init__(self, file: BinaryIO,
               load_storage: Callable[[tuple], Any] | None = None):
    super().__init__(file)
    self._load_storage = load_storage
    self._record_types: dict[str, type] = {}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module.startswith('__torch__.') or module == '__torch__':
      # A TorchScript class: a fresh empty class per name, so NEWOBJ/BUILD
      # only ever fill an attribute dict.
      key = f'{module}.{name}'
      if key not in self._record_types:
        self._record_types[key] = type(name, (ScriptModuleRecord,),
                                       {'torch_type': key})
      return self._record_types[key]
    raise UnsafeArchiveError(
        f'Refusing to load {module}.{name} from a checkpoint pickle: only '
        'tensors, storages and TorchScript module records are allowed. The '
        'file may be malicious or not a plain weights file.')

  def persistent_load(self, pid: Any) -> Any:
    if (self._load_storage is None or not isinstance(pid, tuple) or not pid or
        pid[0] != 'storage'):
      raise UnsafeArchiveError(f'Unexpected persistent id {pid!r:.100}')
    return self._load_storage(pid)


def _storage_type(value: Any) -> _StorageType:
  if not isinstance(value, _StorageType):
    raise UnsafeArchiveError(
        f'Expected a torch storage type, got {value!r:.100}')
  return value


def _read_zip_archive(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names
               if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      raise ValueError(f'{path}: not a torch zip archive (found no single '
                       '<root>/data.pkl).')
    root = pickles[0][:-len('data.pkl')]
    byteorder_name = root + 'byteorder'
    if (byteorder_name in names and
        archive.read(byteorder_name).strip() != b'little'):
      raise ValueError(f'{path}: big-endian archives are not supported.')

    def load_storage(pid: tuple) -> _Storage:
      _, storage_type, key, _location, numel = pid[:5]
      dtype = _storage_type(storage_type).dtype
      raw = archive.read(f'{root}data/{key}')
      if len(raw) != int(numel) * dtype.itemsize:
        raise ValueError(f'{path}: storage {key} holds {len(raw)} bytes, '
                         f'expected {numel} x {dtype.itemsize}.')
      storage = _Storage(dtype, int(numel))
      storage.array = np.frombuffer(raw, dtype=dtype.newbyteorder('<'))
      return storage

    unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])),
                                     load_storage)
    return unpickler.load()


def _read_legacy_stream(path: str) -> Any:
  with open(path, 'rb') as f:
    try:
      magic = _RestrictedUnpickler(f).load()
    except UnsafeArchiveError:
      raise
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
      raise ValueError(f'{path}: neither a torch zip archive nor a legacy '
                       'torch.save file.') from error
    if magic != _LEGACY_MAGIC:
      raise ValueError(f'{path}: neither a torch zip archive nor a legacy '
                       'torch.save file.')
    _RestrictedUnpickler(f).load()  # Protocol version.
    _RestrictedUnpickler(f).load()  # System info (endianness, type sizes).
    storages: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> _Storage | _StorageView:
      _, storage_type, key, _location, numel, view = (tuple(pid) + (None,))[:6]
      dtype = _storage_type(storage_type).dtype
      if key not in storages:
        storages[key] = _Storage(dtype, int(numel))
      if view is None:
        return storages[key]
      _view_key, offset, view_numel = view
      return _StorageView(storages[key], int(offset), int(view_numel))

    result = _RestrictedUnpickler(f, load_storage).load()
    keys = _RestrictedUnpickler(f).load()
    for key in keys:
      storage = storages[key]
      numel = int(np.frombuffer(f.read(8), dtype='<i8')[0])
      raw = f.read(numel * storage.dtype.itemsize)
      if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
        raise ValueError(f'{path}: storage {key} is truncated or malformed.')
      storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder('<'))
    return result


def _materialize(tensor: _LazyTensor) -> np.ndarray:
  storage, offset = tensor.storage, tensor.offset
  if isinstance(storage, _StorageView):
    offset += storage.offset
    storage = storage.root
  flat = storage.array
  if flat is None:
    raise ValueError('A tensor refers to a storage whose bytes are missing.')
  if (len(tensor.size) != len(tensor.stride) or
      min(tensor.stride, default=0) < 0):
    raise ValueError(f'Malformed tensor record size={tensor.size} '
                     f'stride={tensor.stride}.')
  if 0 in tensor.size:
    return np.zeros(tensor.size, flat.dtype.newbyteorder('='))
  # Bounds check before as_strided, which would otherwise read any memory.
  last = offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
  if offset < 0 or last >= flat.size:
    raise ValueError('A tensor record reaches outside its storage.')
  view = np.lib.stride_tricks.as_strided(
      flat[offset:], shape=tensor.size,
      strides=[s * flat.itemsize for s in tensor.stride], writeable=False)
  return np.array(view, dtype=flat.dtype.newbyteorder('='))


def _materialize_tree(value: Any, seen: dict[int, Any]) -> Any:
  if id(value) in seen:
    return seen[id(value)]
  if isinstance(value, _LazyTensor):
    result = _materialize(value)
  elif isinstance(value, dict):
    result = type(value)() if isinstance(value, collections.OrderedDict) else {}
    seen[id(value)] = result
    for key, item in value.items():
      result[key] = _materialize_tree(item, seen)
  elif isinstance(value, (list, tuple)):
    result = type(value)(_materialize_tree(item, seen) for item in value)
  elif isinstance(value, ScriptModuleRecord):
    result = value
    seen[id(value)] = result
    for key, item in list(vars(value).items()):
      setattr(value, key, _materialize_tree(item, seen))
  else:
    result = value
  seen[id(value)] = result
  return result


def load_torch_archive(path: str | os.PathLike) -> Any:
  """Loads a torch.save / torch.jit.save file with tensors as numpy arrays.

  Args:
    path: a `.pth`/`.pt` file (zip archive or legacy torch.save stream).

  Returns:
    The pickled object (e.g. an OrderedDict state dict, or the root
    `ScriptModuleRecord` of a TorchScript module) with every tensor replaced
    by a numpy array.

  Raises:
    UnsafeArchiveError: the pickle names anything but the allowed tensor,
      storage and module-record builders; nothing it names has been called.
    ValueError: the file is not a torch archive or is malformed.
  """
  path = os.fspath(path)
  if zipfile.is_zipfile(path):
    tree = _read_zip_archive(path)
  else:
    tree = _read_legacy_stream(path)
  return _materialize_tree(tree, {})


def flatten_tensors(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  """Flattens a loaded archive into {'a.b.weight': array}.

  State dicts keep their keys; TorchScript module records are walked through
  their attributes, joined by '.', as torch's `state_dict()` names them.
  """
  flat: dict[str, np.ndarray] = {}
  if isinstance(tree, np.ndarray):
    flat[prefix.rstrip('.')] = tree
  elif isinstance(tree, dict):
    for key, value in tree.items():
      flat.update(flatten_tensors(value, f'{prefix}{key}.'))
  elif isinstance(tree, ScriptModuleRecord):
    for key, value in vars(tree).items():
      if isinstance(value, (np.ndarray, ScriptModuleRecord)):
        flat.update(flatten_tensors(value, f'{prefix}{key}.'))
  return flat
