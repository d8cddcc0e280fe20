"""``dtrain.device``: torch's device object, and the one check every ``device=`` argument passes.

dtrain computes with NumPy on the CPU, so 'cpu' (any index, as torch accepts) is the only device
that exists. Other device types torch knows ('cuda', 'mps', ...) can be named, as in torch, but
using one raises ``DeviceUnavailableError`` saying so; an unknown type is refused when named.
"""

from __future__ import annotations

import numpy as np

# the device types torch parses, in its order (for the error listing them)
KNOWN_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve",
               "fpga", "maia", "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia",
               "privateuseone")


class DeviceUnavailableError(RuntimeError, AssertionError):
    """A device other than the CPU was asked for.

    A RuntimeError (torch's type for 'mps' and unknown devices) and an AssertionError (torch's
    type for 'cuda' on a build without CUDA), so either ``except`` of existing code catches it.
    """


class device:
    """A device name ('cpu', 'cpu:0', 'cuda:1', ...), as ``torch.device``; compares by value."""

    __slots__ = ("_index", "_type")

    def __init__(self, type: str | device | int | None = None,
                 index: int | None = None):
        if isinstance(type, device):
            if index is not None:
                raise TypeError("device(): an index cannot be given with a device object")
            self._type, self._index = type._type, type._index
            return
        if isinstance(type, int) and not isinstance(type, bool):
            raise DeviceUnavailableError(_unavailable(f"device index {type} (an accelerator)"))
        if not isinstance(type, str):
            raise TypeError(f"device() expects a string such as 'cpu', got {type!r}")
        name, _, text_index = type.partition(":")
        if name not in KNOWN_TYPES:
            raise RuntimeError(f"Expected one of {', '.join(KNOWN_TYPES)} device type at start of "
                               f"device string: {type} (dtrain runs on the CPU only: use 'cpu')")
        if text_index:
            if index is not None:
                raise RuntimeError(f"type (string) must not include an index because index was "
                                   f"passed explicitly: {type}")
            if not text_index.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}' (dtrain runs on the CPU only: "
                                   "use 'cpu')")
            index = int(text_index)
        if index is not None and (not isinstance(index, int) or index < 0):
            raise RuntimeError(f"Device index must not be negative, got {index!r}")
        self._type, self._index = name, index

    @property
    def type(self) -> str:
        """'cpu', 'cuda', ..."""
        return self._type

    @property
    def index(self) -> int | None:
        """The device number, or None when not given."""
        return self._index

    def __eq__(self, other):
        if not isinstance(other, device):
            return NotImplemented
        return (self._type, self._index) == (other._type, other._index)

    def __hash__(self):
        return hash((self._type, self._index))

    def __str__(self):
        return self._type if self._index is None else f"{self._type}:{self._index}"

    def __repr__(self):
        if self._index is None:
            return f"device(type='{self._type}')"
        return f"device(type='{self._type}', index={self._index})"


CPU = device("cpu")


def _unavailable(what: str) -> str:
    return (f"{what} is not available: dtrain runs on the CPU only (NumPy), so use 'cpu' or "
            f"leave the device out; dtrain.cuda.is_available() is False")


def unavailable(name: str) -> DeviceUnavailableError:
    """The error for asking to use device ``name`` (to raise)."""
    return DeviceUnavailableError(_unavailable(f"device '{name}'"))


def check_device(value) -> device:
    """The CPU device for any spelling of it (None included); raises for every other device."""
    if value is None:
        return CPU
    dev = value if isinstance(value, device) else device(value)
    if dev._type != "cpu":
        raise unavailable(str(dev))
    return CPU


def is_device_like(value) -> bool:
    """True for what ``Tensor.to`` reads as a device: a device, an int index or a string that
    does not name a dtype (dtrain's own code passes dtype names such as 'float64')."""
    if isinstance(value, str):
        return value.partition(":")[0] in KNOWN_TYPES or not _names_dtype(value)
    return isinstance(value, device) or (isinstance(value, int) and not isinstance(value, bool))


def _names_dtype(text: str) -> bool:
    try:
        np.dtype(text)
    except TypeError:
        return False
    return True


def parse_to(args: tuple, kwargs: dict):
    """Read ``Tensor.to`` / ``Module.to`` arguments the torch ways; returns (dtype, like, copy).

    Accepted: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``, ``to(other_tensor)`` and the
    keywords ``device``, ``dtype``, ``non_blocking``, ``copy`` (``memory_format`` is ignored:
    NumPy arrays have one layout here). ``like`` is the tensor whose dtype to take, or None.
    """
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy", "memory_format"}
    if unknown:
        raise TypeError(f"to() got unexpected keyword argument(s) {sorted(unknown)}")
    if len(args) > 3:
        raise TypeError(f"to() takes at most 3 positional arguments ({len(args)} given)")
    dtype, like = kwargs.get("dtype"), None
    check_device(kwargs.get("device"))
    rest = list(args)
    if rest and hasattr(rest[0], "_data") and hasattr(rest[0], "grad_fn"):  # a Tensor
        like = rest.pop(0)
    elif rest and is_device_like(rest[0]):
        check_device(rest.pop(0))
    if rest and not isinstance(rest[0], bool):
        if dtype is not None:
            raise TypeError("to() got dtype both as an argument and as a keyword")
        dtype = rest.pop(0)
    # whatever is left is non_blocking, then copy (torch's positional order)
    flags = rest + [kwargs.get("non_blocking", False), kwargs.get("copy", False)][len(rest):]
    if not all(isinstance(f, bool) for f in flags[:2]):
        raise TypeError(f"to() received an invalid combination of arguments: {args!r}")
    return dtype, like, bool(flags[1]) if len(flags) > 1 else False
