"""Build hook: generates gradwatch.v1 (the gRPC stubs of ../proto) into the build folder, so an
installed package carries them and never needs protoc at import time; builds gradwatch.torch's
native sums (gradwatch/torch/_sumsq.c, loaded with ctypes, see native.py) where a C compiler is
found, and installs without them otherwise. Everything else is in pyproject.toml. `pip install ./python` (pip builds in the source tree, where ../proto is; or set
GRADWATCH_PROTO to the proto/ folder)."""
import importlib.util
import pathlib

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


# A plain C library (no Python API), built as an extension so that setuptools finds the compiler.
NATIVE = Extension("gradwatch.torch._sumsq", ["gradwatch/torch/_sumsq.c"], extra_compile_args=["-O3", "-std=c11"],
                   libraries=["m"], optional=True)

setup(cmdclass={"build_py": BuildWithStubs}, ext_modules=[NATIVE])
