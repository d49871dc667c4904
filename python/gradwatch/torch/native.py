"""Sums of squares of a step's CPU tensors in one native call each (_sumsq.c, through ctypes).

On the CPU LibTorch 1.13 runs torch._foreach_norm and the other _foreach_* ops as one kernel per
tensor, about 3 us of dispatch each: for the Python case (26 tensors, 29,681 values) the
per-layer gradient norms, the update direction and the weight norm took ~0.4 ms a step, several
times the arithmetic. Here each is one loop over raw memory: ~0.06 ms.

Where the library comes from: an installed package (`pip install ./python`) carries it beside
this module (setup.py builds it); in the source tree it is compiled on first use with the C
compiler ($CC, else cc) into a cache folder named after a hash of the source
($GRADWATCH_NATIVE_DIR, else $XDG_CACHE_HOME/gradwatch/native, else ~/.cache/gradwatch/native).
Without a compiler, or with GRADWATCH_NATIVE=0, available() is False and the callers use the
fused torch ops: the same values, slower.

Each function takes lists of tensors and returns None unless every tensor is on the CPU, dense
and contiguous, of one dtype (float32 or float64) and, for the lists that go together, of the
same number of elements as its gradient: the caller then falls back to torch ops. The tensors
are only read, and must not change during the call (the training thread's own tensors).
"""
import array
import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import List, Optional, Sequence, Tuple

import torch

from gradwatch._stubs import cache_folder

_SOURCE = pathlib.Path(__file__).with_name("_sumsq.c")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_STRIDED = torch.strided
_COMPILE_TIMEOUT_S = 120
_P = ctypes.c_void_p
_D = ctypes.c_double
_SIGNATURES = {  # name: (argument types, return type)
    "gw_sumsq": ([ctypes.c_int64, _P, _P, _P], None),
    "gw_sgd_sumsq": ([ctypes.c_int64, _P, _P, _P, _P, _D, _D], _D),
    "gw_adam_sumsq": ([ctypes.c_int64, _P, _P, _P, _P, _P, _P, _D, _D, _D, _D, _D], _D),
}


def compile_library(target: pathlib.Path) -> None:
    """Builds _sumsq.c into the shared library `target` (raises CalledProcessError, TimeoutExpired
    or OSError)."""
    cc = os.environ.get("CC") or "cc"
    subprocess.run([cc, "-O3", "-std=c11", "-shared", "-fPIC", "-o", str(target), str(_SOURCE), "-lm"],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=_COMPILE_TIMEOUT_S)


def _library_path() -> Optional[pathlib.Path]:
    installed = sorted(pathlib.Path(__file__).parent.glob("_sumsq*.so"))
    if installed:
        return installed[0]
    if not _SOURCE.is_file():
        return None
    folder = cache_folder("GRADWATCH_NATIVE_DIR", "native") / hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
    target = folder / "libgwsumsq.so"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        compile_library(pathlib.Path(tmp))
        os.replace(tmp, target)  # atomic: another process may build the same file
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


@functools.lru_cache(maxsize=1)
def _library() -> Optional[ctypes.CDLL]:
    if os.environ.get("GRADWATCH_NATIVE", "1") == "0":
        return None
    try:
        path = _library_path()
        lib = ctypes.CDLL(str(path)) if path is not None else None
    except OSError:
        return None
    if lib is not None:
        for name, (args, result) in _SIGNATURES.items():
            for suffix in _SUFFIX.values():
                fn = getattr(lib, f"{name}_{suffix}")
                fn.argtypes, fn.restype = args, result
    return lib


def available() -> bool:
    """Whether the native library is loaded (built here, or installed with the package)."""
    return _library() is not None


class _Tables:
    """Address tables of aligned lists of tensors, and their element counts; `ok` False when a
    tensor does not qualify (see the module's docstring)."""

    def __init__(self, first: Sequence[torch.Tensor], *others: Optional[Sequence[torch.Tensor]]) -> None:
        dtype = first[0].dtype if first else None
        self.suffix = _SUFFIX.get(dtype)
        self.ok = self.suffix is not None
        self.tables: List[Optional[array.array]] = []
        lengths = [t.numel() for t in first] if self.ok else []
        self.lengths = array.array("q", lengths)
        for xs in (first,) + others if self.ok else ():
            if xs is None:
                self.tables.append(None)
                continue
            # List comprehensions, and t.is_cpu rather than t.device.type: these run for every
            # tensor of every step.
            usable = [t.is_cpu and t.layout is _STRIDED and t.dtype is dtype and t.is_contiguous() for t in xs]
            if len(xs) != len(first) or not all(usable) or (xs is not first and [t.numel() for t in xs] != lengths):
                self.ok = False
                return
            self.tables.append(array.array("Q", [t.data_ptr() for t in xs]))

    def addresses(self) -> Tuple[int, ...]:
        return tuple(0 if t is None else t.buffer_info()[0] for t in self.tables)


def sumsq(xs: Sequence[torch.Tensor]) -> Optional[List[float]]:
    """The sum of squares of each tensor, in order; None = use torch ops."""
    lib = _library()
    if lib is None or not xs:
        return None if lib is None else []
    tables = _Tables(xs)
    if not tables.ok:
        return None
    out = array.array("d", bytes(8 * len(xs)))
    getattr(lib, f"gw_sumsq_{tables.suffix}")(len(xs), *tables.addresses(), tables.lengths.buffer_info()[0],
                                              out.buffer_info()[0])
    return out.tolist()


def sgd_sumsq(g: Sequence[torch.Tensor], w: Optional[Sequence[torch.Tensor]], b: Optional[Sequence[torch.Tensor]],
              cw: float, cb: float) -> Optional[float]:
    """Sum over the tensors of ||g + cw*w + cb*b||^2 (w, b None = absent); None = use torch ops."""
    lib = _library()
    tables = _Tables(g, w, b) if lib is not None else None
    if tables is None or not tables.ok:
        return None
    return getattr(lib, f"gw_sgd_sumsq_{tables.suffix}")(len(g), *tables.addresses(), tables.lengths.buffer_info()[0],
                                                         cw, cb)


def adam_sumsq(g: Sequence[torch.Tensor], w: Optional[Sequence[torch.Tensor]], m: Optional[Sequence[torch.Tensor]],
               v: Optional[Sequence[torch.Tensor]], vmax: Optional[Sequence[torch.Tensor]],
               cw: float, cm: float, cv: float, kmax: float, eps: float) -> Optional[float]:
    """Sum over the tensors of ||M / (sqrt(V) + eps)||^2 with u = g + cw*w, M = m + cm*u (u
    without m), V = v + cv*u^2 (u^2 without v), then V = max(V, kmax*vmax) with vmax; None = use
    torch ops."""
    lib = _library()
    tables = _Tables(g, w, m, v, vmax) if lib is not None else None
    if tables is None or not tables.ok:
        return None
    return getattr(lib, f"gw_adam_sumsq_{tables.suffix}")(len(g), *tables.addresses(),
                                                          tables.lengths.buffer_info()[0], cw, cm, cv, kmax, eps)
