"""Build hook: generates gradwatch.v1 (the gRPC stubs of ../proto) into the build folder, so an
installed package carries them and never needs protoc at import time; builds gradwatch.torch's
native sums (gradwatch/torch/_native.cc, torch operators, see native.py) where torch is importable
at build time (pip install --no-build-isolation, or python3 setup.py) and a C++ compiler is found,
and installs without them otherwise (they are then compiled on first use). Everything else is in
pyproject.toml. `pip install ./python` (pip builds in the source tree, where ../proto is; or set
GRADWATCH_PROTO to the proto/ folder)."""
import importlib.util
import pathlib
import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent


def _stubs_module():
    # Loaded by path: importing the gradwatch package here would need grpc at build time.
    spec = importlib.util.spec_from_file_location("_gradwatch_stubs", HERE / "gradwatch" / "_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithStubs(build_py):
    def run(self):
        super().run()
        stubs = _stubs_module()
        proto_root = stubs.find_proto_root()
        if proto_root is None:
            raise SystemExit("gradwatch: proto/ not found next to python/; set GRADWATCH_PROTO to the "
                             "repository's proto/ folder")
        stubs.generate(proto_root, pathlib.Path(self.build_lib))


def _native_extension():
    """The torch operators of native.py, as an optional extension (a library torch.ops loads, no
    Python module in it); none when torch cannot be imported here."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return []
    sys.path.insert(0, str(HERE))  # native.py imports gradwatch._stubs (no dependencies)
    spec = importlib.util.spec_from_file_location("_gradwatch_native", HERE / "gradwatch" / "torch" / "native.py")
    native = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(native)
    compile_flags, link_flags = native.build_flags()
    return [Extension("gradwatch.torch._native", ["gradwatch/torch/_native.cc"], language="c++",
                      extra_compile_args=compile_flags, extra_link_args=link_flags, optional=True)]


setup(cmdclass={"build_py": BuildWithStubs}, ext_modules=_native_extension())
