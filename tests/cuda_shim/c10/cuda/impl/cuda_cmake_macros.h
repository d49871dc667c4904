#pragma once
// Syntax-check shim: CMake writes this file in a CUDA build of LibTorch; nothing is needed here.
