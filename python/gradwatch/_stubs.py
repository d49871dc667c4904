"""The gRPC stubs of proto/gradwatch/v1, generated, never checked in.

`gradwatch.v1` is a package of this one, so the generated modules' own imports
(`from gradwatch.v1 import telemetry_pb2`) resolve inside it. Where they come from:

- an installed package (`pip install ./python`): setup.py's build step ran protoc and put them
  beside `gradwatch/v1/__init__.py`;
- the source tree: on first import they are generated from the repository's proto/ (or
  $GRADWATCH_PROTO) into a cache folder named after a hash of the .proto files
  ($GRADWATCH_STUBS_DIR, else $XDG_CACHE_HOME/gradwatch/stubs, else ~/.cache/gradwatch/stubs),
  which is then added to `gradwatch.v1.__path__`. Editing a .proto gives a new hash, hence
  fresh stubs; a cache folder appears atomically (generated aside, then renamed).

Both need Debian's protobuf-compiler (protoc) and protobuf-compiler-grpc (grpc_python_plugin);
python3-protobuf and python3-grpcio to import the result.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import List, Optional

PROTO_FILES = ("gradwatch/v1/telemetry.proto", "gradwatch/v1/runs.proto", "gradwatch/v1/jobs.proto")
MODULES = ("telemetry_pb2", "telemetry_pb2_grpc", "runs_pb2", "runs_pb2_grpc", "jobs_pb2", "jobs_pb2_grpc")


class StubsUnavailable(ImportError):
    """The generated modules are neither installed nor can be generated here."""


def find_proto_root() -> Optional[pathlib.Path]:
    """$GRADWATCH_PROTO, else the repository's proto/ next to python/; None if neither holds them."""
    candidates = [os.environ.get("GRADWATCH_PROTO"), pathlib.Path(__file__).resolve().parents[2] / "proto"]
    for c in candidates:
        if c and all((pathlib.Path(c) / f).is_file() for f in PROTO_FILES):
            return pathlib.Path(c)
    return None


def generate(proto_root: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Runs protoc with the gRPC Python plugin; the modules land in out_dir/gradwatch/v1/.
    Raises StubsUnavailable naming what is missing or what protoc said."""
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if not protoc or not plugin:
        raise StubsUnavailable("gradwatch: generating the gRPC stubs needs protoc and grpc_python_plugin "
                               "(Debian: apt-get install protobuf-compiler protobuf-compiler-grpc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([protoc, f"--proto_path={proto_root}", f"--python_out={out_dir}",
                        f"--grpc_python_out={out_dir}", f"--plugin=protoc-gen-grpc_python={plugin}",
                        *PROTO_FILES], capture_output=True, text=True)
    if p.returncode != 0:
        raise StubsUnavailable(f"gradwatch: protoc failed on {proto_root}:\n{p.stderr}")


def cache_folder(variable: str, name: str) -> pathlib.Path:
    """$variable, else $XDG_CACHE_HOME/gradwatch/NAME, else ~/.cache/gradwatch/NAME: where the
    source tree's generated files go (these stubs; gradwatch.torch's native library)."""
    if os.environ.get(variable):
        return pathlib.Path(os.environ[variable])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "gradwatch" / name


def _cache_root() -> pathlib.Path:
    return cache_folder("GRADWATCH_STUBS_DIR", "stubs")


def _digest(proto_root: pathlib.Path) -> str:
    h = hashlib.sha256()
    for f in PROTO_FILES:
        h.update(f.encode() + b"\0" + (proto_root / f).read_bytes())
    return h.hexdigest()[:16]


def cached_stubs() -> pathlib.Path:
    """The folder holding the generated gradwatch/v1 modules for this source tree's protos,
    generating it on first use."""
    proto_root = find_proto_root()
    if proto_root is None:
        raise StubsUnavailable("gradwatch: the generated stubs are not installed and no proto/ was found "
                               "(set GRADWATCH_PROTO to the repository's proto/ folder, or pip install ./python)")
    target = _cache_root() / _digest(proto_root)
    modules = target / "gradwatch" / "v1"
    if all((modules / f"{m}.py").is_file() for m in MODULES):
        return modules
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".gen-", dir=target.parent))
    try:
        generate(proto_root, tmp)
        try:
            os.rename(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not all((modules / f"{m}.py").is_file() for m in MODULES):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return modules


def extend_path(package_path: List[str]) -> None:
    """Makes the generated modules importable as gradwatch.v1.*: nothing to do when they were
    installed beside the package, else the cache folder joins its __path__."""
    here = pathlib.Path(package_path[0])
    if all((here / f"{m}.py").is_file() for m in MODULES):
        return
    folder = str(cached_stubs())
    if folder not in package_path:
        package_path.append(folder)
