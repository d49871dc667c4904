"""A step's norms and sums of squares of CPU tensors in one native call (_native.cc: the torch
operators gradwatch::grad_stats, sgd_step_stats and adam_sumsq).

On the CPU LibTorch 1.13 runs torch._foreach_norm and the other _foreach_* ops as one kernel per
tensor, about 3 us of dispatch each: for the Python case (26 tensors, 29,681 values) the
per-layer gradient norms, the update direction and the weight norm took ~0.2 ms a step in a hot
loop, several times the arithmetic. Here one call reads each parameter's gradient, weight and
(SGD) momentum buffer once: 41 us hot. The operators take the parameters themselves, so reading
p.grad and checking each tensor (device, layout, dtype, contiguity, size) happen in C++ rather
than through the Python bindings.

Where the library comes from: an installed package (`pip install ./python`, with torch importable
at build time) carries it beside this module (setup.py builds it); otherwise it is compiled on
first use (~10 s, once: a line on stderr says so; on a thread of its own, torch ops measuring
meanwhile, see ready()) with the C++ compiler ($CXX, else c++) against
the running torch's headers, into a cache folder named after a hash of the source, the torch
version and the compiler ($GRADWATCH_NATIVE_DIR, else $XDG_CACHE_HOME/gradwatch/native, else
~/.cache/gradwatch/native). Without a compiler or torch's headers, or with GRADWATCH_NATIVE=0,
available() is False and the callers use the fused torch ops: the same values, slower.

Each function takes lists of parameters (and optimizer state) and returns None unless every
tensor it reads is on the CPU, dense and contiguous, of one dtype (float32 or float64) and, for
the lists that go together, of the same number of elements as its gradient: the caller then
falls back to torch ops. The tensors are only read, and must not change during the call (the
training thread's own tensors).
"""
import hashlib
import operator
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from gradwatch._stubs import cache_folder

SOURCE = pathlib.Path(__file__).with_name("_native.cc")
_COMPILE_TIMEOUT_S = 300


def build_flags() -> Tuple[List[str], List[str]]:
    """The compiler's and the linker's flags that build _native.cc against the running torch
    (headers, libraries, its C++ ABI), as setup.py also uses them."""
    root = pathlib.Path(torch.__file__).resolve().parent
    lib = root / "lib"
    return (["-O3", "-std=c++17", f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
             f"-I{root / 'include'}"],
            [f"-L{lib}", f"-Wl,-rpath,{lib}", "-lc10", "-ltorch_cpu"])


def compile_library(target: pathlib.Path) -> None:
    """Builds _native.cc into the shared library `target` (raises CalledProcessError, with the
    compiler's output, TimeoutExpired or OSError)."""
    cxx = os.environ.get("CXX") or "c++"
    compile_flags, link_flags = build_flags()
    subprocess.run([cxx, "-shared", "-fPIC", *compile_flags, "-o", str(target), str(SOURCE), *link_flags],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S)


def _say(message: str) -> None:
    print(f"gradwatch: {message}", file=sys.stderr, flush=True)


def _cached_library() -> Optional[pathlib.Path]:
    """The library in the cache folder, compiled there first if it is not."""
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() +
                         (os.environ.get("CXX") or "c++").encode()).hexdigest()[:16]
    folder = cache_folder("GRADWATCH_NATIVE_DIR", "native") / key
    target = folder / "libgradwatch_native.so"
    if target.is_file():
        return target
    _say(f"compiling the native step statistics into {folder} (once; GRADWATCH_NATIVE=0 skips it)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
        os.close(fd)
    except OSError as e:
        _say(f"cannot write {folder}: {e.strerror or e}; measuring with torch ops (slower)")
        return None
    try:
        compile_library(pathlib.Path(tmp))
        os.replace(tmp, target)  # atomic: another process may build the same file
    except subprocess.CalledProcessError as e:
        first = next((line for line in (e.stderr or "").splitlines() if "error" in line), "").strip()
        _say(f"the native step statistics did not compile ({first or f'exit {e.returncode}'}); "
             "measuring with torch ops (slower)")
        return None
    except (OSError, subprocess.SubprocessError) as e:
        _say(f"the native step statistics could not be compiled ({e}); measuring with torch ops (slower)")
        return None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _libraries() -> Iterator[pathlib.Path]:
    """Where to load the library from, in order: beside this module (installed by setup.py),
    then the cache folder (compiled there on first use)."""
    yield from sorted(pathlib.Path(__file__).parent.glob("_native*.so"))
    if SOURCE.is_file():
        cached = _cached_library()
        if cached is not None:
            yield cached


def _load() -> Optional[Any]:
    """torch.ops.gradwatch once the library is loaded (building it first if need be), else None."""
    if os.environ.get("GRADWATCH_NATIVE", "1") == "0":
        return None
    for path in _libraries():
        try:
            torch.ops.load_library(str(path))
            return torch.ops.gradwatch
        except (OSError, RuntimeError):  # built for another torch; the operators already registered
            continue
    return None


class _Library:
    """The process's one native library (torch.ops registers operators process-wide), loaded, or
    compiled and loaded, once, on a thread of its own: a training loop can go on with torch ops
    while a first use compiles it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ops: Optional[Any] = None

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gradwatch-native", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._ops = _load()
        finally:
            self._done.set()

    def wait(self) -> Optional[Any]:
        """The operators, loading them first if need be; None if they cannot be."""
        if not self._done.is_set():  # once loaded, no lock is taken: this runs every step
            self._start()
            self._done.wait()
        return self._ops

    def now(self) -> Optional[Any]:
        """The operators if loaded; else None, and loading them is under way."""
        if not self._done.is_set():
            self._start()
            return None
        return self._ops


_LIBRARY = _Library()


def available() -> bool:
    """Whether the native library is loaded (installed with the package, or built here), waiting
    for it to load or compile first."""
    return _LIBRARY.wait() is not None


def ready() -> bool:
    """Whether the native library is loaded, without waiting: the first call starts loading it
    (or compiling it, ~10 s once) in the background; until then callers use torch ops."""
    return _LIBRARY.now() is not None


def _call(name: str, *args: Any) -> Optional[List[float]]:
    """The operator `name`'s answer, waiting for the library first; None when there is no
    library, when the operator refuses the tensors (an empty answer) or when the schema does not
    take an argument: the caller then uses torch ops."""
    ops = _LIBRARY.wait()
    if ops is None:
        return None
    try:
        return getattr(ops, name)(*args) or None
    except RuntimeError:
        return None


def grad_stats(params: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> Optional[List[float]]:
    """[the norm of each parameter's gradient as reported (rounded to float32), -1 for one
    without; the global norm, from those; the sum of squares of the `weights` that have a
    gradient, together]; None = use torch ops."""
    return _call("grad_stats", params, weights)


def sgd_step_stats(params: Sequence[torch.Tensor], moved: Sequence[torch.Tensor], group_sizes: Sequence[int],
                   coefficients: Sequence[float], state_keys: Sequence[torch.Tensor],
                   state_buffers: Sequence[Optional[torch.Tensor]]) -> Optional[List[float]]:
    """What step_stats measures for torch.optim.SGD, in one pass over each parameter's gradient g,
    weight w and momentum buffer b: params, the layers in report order; moved, every parameter of
    every group, group after group (group_sizes); coefficients, four per group: cg, cw, cb (the
    direction cg*g + cw*w + cb*b where there is a buffer) and cw0 (g + cw0*w where there is none);
    state_keys and state_buffers, the optimizer's state: the parameters it holds and their buffers
    (None: none), matched by identity natively (a lookup per parameter from Python would call
    Tensor.__hash__, Python code, each time). Returns grad_stats' values (layer norms, global norm,
    weight sum of squares), then per group the direction's sum of squares over the parameters
    with a buffer and over those without; None = use torch ops."""
    # The layers are usually the moved parameters themselves: passed once, each tensor in a list
    # costs a conversion (~0.15 us).
    same = len(params) == len(moved) and all(map(operator.is_, params, moved))
    return _call("sgd_step_stats", [] if same else params, same, moved, group_sizes, coefficients, state_keys,
                 state_buffers)


def adam_sumsq(params: Sequence[torch.Tensor], m: Optional[Sequence[torch.Tensor]],
               v: Optional[Sequence[torch.Tensor]], vmax: Optional[Sequence[torch.Tensor]],
               cw: float, cm: float, cv: float, kmax: float, eps: float) -> Optional[float]:
    """Sum over the parameters (each with a gradient g) of ||M / (sqrt(V) + eps)||^2 with
    u = g + cw*w, M = m + cm*u (u without m), V = v + cv*u^2 (u^2 without v), then
    V = max(V, kmax*vmax) with vmax; None = use torch ops."""
    out = _call("adam_sumsq", params, m, v, vmax, float(cw), float(cm), float(cv), float(kmax), float(eps))
    return out[0] if out else None
