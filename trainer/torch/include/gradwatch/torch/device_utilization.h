// How busy the training GPU is, from NVIDIA's management library (NVML), which LibTorch's C++
// API does not expose (PyTorch's torch.cuda.utilization() asks NVML too). NVML is opened at
// run time with dlopen, so the trainer needs neither its header nor its library to build, and
// runs unchanged where there is no NVIDIA driver. No torch here.
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace gradwatch::torchmon {

// Which NVML device a CUDA device index is: CUDA numbers only the devices CUDA_VISIBLE_DEVICES
// lists, in its order, while NVML numbers every device. `visible` is that variable's value
// (nullptr = unset). Entries are indices or UUIDs ("GPU-…", "MIG-…"); as in CUDA, the list ends
// at the first entry that is neither. CUDA_DEVICE_ORDER=FASTEST_FIRST (CUDA's default) can
// number devices differently from NVML's PCI order on a mixed machine; like PyTorch, this
// assumes PCI order.
struct NvmlDevice {
  int index = -1;      // NVML's index, or -1 when uuid names the device
  std::string uuid;    // for nvmlDeviceGetHandleByUUID
  std::string error;   // non-empty: the CUDA index has no visible device; nothing else is set
};
NvmlDevice NvmlDeviceOf(int cuda_index, const char* visible);

class DeviceUtilization {
 public:
  // Opens `library` (dlopen: a path or a name the loader finds) and the device `device`.
  // nullptr, with *why saying what failed (no library, a missing symbol, NVML's own error
  // text), when utilisation cannot be read; the caller then reports none.
  static std::unique_ptr<DeviceUtilization> Open(const NvmlDevice& device, std::string* why,
                                                 const std::string& library = "libnvidia-ml.so.1");
  ~DeviceUtilization();
  DeviceUtilization(const DeviceUtilization&) = delete;
  DeviceUtilization& operator=(const DeviceUtilization&) = delete;

  // The share of the driver's last sample period (1/6 s to 1 s, by GPU) in which a kernel ran,
  // 0..1; NaN when NVML answers with an error. Asks NVML at most once per `every` (by `now`),
  // returning the last answer in between: a per-step call costs nothing most steps.
  double Fraction(std::chrono::steady_clock::time_point now,
                  std::chrono::steady_clock::duration every = std::chrono::seconds(1));

 private:
  struct Api;
  DeviceUtilization(std::unique_ptr<Api> api, void* handle);
  std::unique_ptr<Api> api_;
  void* device_;  // nvmlDevice_t
  std::chrono::steady_clock::time_point asked_{};
  bool ever_asked_ = false;
  double last_ = 0;
};

}  // namespace gradwatch::torchmon
