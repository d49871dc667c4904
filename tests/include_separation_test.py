"""No translation unit includes both torch and protobuf headers.

A LibTorch from pip ships its own (older) protobuf headers ahead of the system's, so a
file that includes both fails to compile there. The build's dependency records (Ninja's
`-t deps`) show what each object file really included.
"""
import subprocess
import sys


def main(build_dir):
    targets = subprocess.run(["ninja", "-C", build_dir, "-t", "targets", "all"], capture_output=True,
                             text=True, check=True).stdout
    objects = [line.split(":")[0] for line in targets.splitlines() if line.split(":")[0].endswith(".cc.o")]
    mixed, torch_units = [], 0
    for obj in objects:
        deps = subprocess.run(["ninja", "-C", build_dir, "-t", "deps", obj], capture_output=True, text=True).stdout
        has_torch = "/torch/csrc/" in deps or "/ATen/" in deps
        torch_units += has_torch
        if has_torch and "google/protobuf/" in deps:
            mixed.append(obj)
    assert torch_units > 0, "no torch translation unit found: is the build complete?"
    assert not mixed, "these include both torch and protobuf headers:\n  " + "\n  ".join(mixed)
    print(f"{torch_units} torch translation units, none includes protobuf")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
