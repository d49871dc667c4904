#include "system_stats.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#if GRADWATCH_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace gradwatch::torchmon {

int64_t ResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long long size = 0, resident = -1;
  int n = std::fscanf(f, "%lld %lld", &size, &resident);
  std::fclose(f);
  if (n != 2 || resident < 0) return -1;
  return static_cast<int64_t>(resident) * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

int CudaIndex(const std::string& device) {
  if (device == "cuda") return 0;
  if (device.rfind("cuda:", 0) != 0 || device.size() == 5 || device.size() > 9) return -1;
  for (size_t i = 5; i < device.size(); ++i) {
    if (device[i] < '0' || device[i] > '9') return -1;
  }
  return std::atoi(device.c_str() + 5);
}

void CudaMemory(const std::string& device, SystemSample* out) {
  const int index = CudaIndex(device);
  if (index < 0) return;
#if GRADWATCH_TORCH_CUDA
  if (index >= static_cast<int>(c10::cuda::device_count())) return;
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  // Index 0 is StatType::AGGREGATE (all pools), in every LibTorch that has the allocator stats.
  out->cuda_allocated_bytes = stats.allocated_bytes[0].current;
  out->cuda_reserved_bytes = stats.reserved_bytes[0].current;
  out->cuda_peak_allocated_bytes = stats.allocated_bytes[0].peak;
#else
  (void)out;
#endif
}

}  // namespace gradwatch::torchmon
