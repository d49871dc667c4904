// The process's memory for a step's report: the resident set from /proc, and the CUDA caching
// allocator's counters when LibTorch has CUDA and the run's device is a CUDA device.
#pragma once

#include <cstdint>
#include <string>

#include "gradwatch/torch/types.h"

namespace gradwatch::torchmon {

// The process's resident set size in bytes (/proc/self/statm); -1 where unknown.
int64_t ResidentBytes();

// The index of a CUDA device string: "cuda" is 0, "cuda:N" is N; -1 for any other device.
int CudaIndex(const std::string& device);

// Fills out's cuda_* fields for `device` ("cuda" or "cuda:N"). Leaves them -1 on any other
// device, when no CUDA device is present at run time, and with a LibTorch built without CUDA
// (Debian's): GRADWATCH_TORCH_CUDA is defined only when LibTorch's c10_cuda library was found.
void CudaMemory(const std::string& device, SystemSample* out);

}  // namespace gradwatch::torchmon
