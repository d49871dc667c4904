#include "gradwatch/torch/device_utilization.h"

#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <type_traits>
#include <vector>

namespace gradwatch::torchmon {
namespace {

// NVML's C ABI, as nvml.h declares it (stable since NVML 5; the _v2 entry points since 2013).
using NvmlReturn = int;  // nvmlReturn_t; 0 = NVML_SUCCESS
struct NvmlUtilization {
  unsigned int gpu;     // percent of the sample period in which a kernel ran
  unsigned int memory;  // percent in which device memory was read or written
};
using Device = void*;  // nvmlDevice_t

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace

NvmlDevice NvmlDeviceOf(int cuda_index, const char* visible) {
  NvmlDevice out;
  if (cuda_index < 0) {
    out.error = "CUDA device index " + std::to_string(cuda_index) + " is negative";
    return out;
  }
  if (visible == nullptr) {
    out.index = cuda_index;
    return out;
  }
  std::vector<std::string> entries;
  std::stringstream list(visible);
  for (std::string entry; std::getline(list, entry, ',');) {
    const size_t first = entry.find_first_not_of(" \t"), last = entry.find_last_not_of(" \t");
    entry = first == std::string::npos ? "" : entry.substr(first, last - first + 1);
    const bool uuid = entry.rfind("GPU-", 0) == 0 || entry.rfind("MIG-", 0) == 0;
    if (!uuid && !AllDigits(entry)) break;  // CUDA ignores the rest of the list
    entries.push_back(entry);
  }
  if (cuda_index >= static_cast<int>(entries.size())) {
    out.error = "CUDA device " + std::to_string(cuda_index) + " is not among the " +
                std::to_string(entries.size()) + " that CUDA_VISIBLE_DEVICES=\"" + visible + "\" makes visible";
    return out;
  }
  const std::string& e = entries[static_cast<size_t>(cuda_index)];
  if (AllDigits(e)) {
    out.index = e.size() > 9 ? -1 : std::atoi(e.c_str());
    if (out.index < 0) out.error = "CUDA_VISIBLE_DEVICES entry " + e + " is out of range";
  } else {
    out.uuid = e;
  }
  return out;
}

struct DeviceUtilization::Api {
  void* library = nullptr;
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*shutdown)() = nullptr;
  NvmlReturn (*by_index)(unsigned int, Device*) = nullptr;
  NvmlReturn (*by_uuid)(const char*, Device*) = nullptr;
  NvmlReturn (*utilization)(Device, NvmlUtilization*) = nullptr;
  const char* (*error_string)(NvmlReturn) = nullptr;
  bool initialized = false;

  ~Api() {
    if (initialized) shutdown();
    if (library) dlclose(library);
  }
  std::string Error(const char* call, NvmlReturn code) const {
    const char* text = error_string ? error_string(code) : nullptr;
    return std::string(call) + " failed: " + (text ? text : "error " + std::to_string(code));
  }
};

std::unique_ptr<DeviceUtilization> DeviceUtilization::Open(const NvmlDevice& device, std::string* why,
                                                           const std::string& library) {
  std::string ignored;
  if (!why) why = &ignored;
  if (!device.error.empty()) {
    *why = device.error;
    return nullptr;
  }
  auto api = std::make_unique<Api>();
  api->library = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!api->library) {
    const char* e = dlerror();
    *why = "cannot load NVML (" + library + "): " + (e ? e : "unknown error");
    return nullptr;
  }
  const auto find = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(api->library, name));
    if (!fn) *why = library + " has no " + name;
    return fn != nullptr;
  };
  if (!find(api->init, "nvmlInit_v2") || !find(api->shutdown, "nvmlShutdown") ||
      !find(api->by_index, "nvmlDeviceGetHandleByIndex_v2") || !find(api->by_uuid, "nvmlDeviceGetHandleByUUID") ||
      !find(api->utilization, "nvmlDeviceGetUtilizationRates")) {
    return nullptr;
  }
  find(api->error_string, "nvmlErrorString");  // optional: messages say the number without it
  if (NvmlReturn r = api->init(); r != 0) {
    *why = api->Error("nvmlInit_v2", r);
    return nullptr;
  }
  api->initialized = true;
  Device handle = nullptr;
  const NvmlReturn r = device.uuid.empty() ? api->by_index(static_cast<unsigned int>(device.index), &handle)
                                           : api->by_uuid(device.uuid.c_str(), &handle);
  if (r != 0) {
    *why = api->Error(device.uuid.empty() ? "nvmlDeviceGetHandleByIndex_v2" : "nvmlDeviceGetHandleByUUID", r);
    return nullptr;
  }
  return std::unique_ptr<DeviceUtilization>(new DeviceUtilization(std::move(api), handle));
}

DeviceUtilization::DeviceUtilization(std::unique_ptr<Api> api, void* handle)
    : api_(std::move(api)), device_(handle) {}

DeviceUtilization::~DeviceUtilization() = default;

double DeviceUtilization::Fraction(std::chrono::steady_clock::time_point now,
                                   std::chrono::steady_clock::duration every) {
  if (ever_asked_ && now - asked_ < every) return last_;
  ever_asked_ = true;
  asked_ = now;
  NvmlUtilization u{};
  last_ = api_->utilization(device_, &u) == 0 ? std::min(u.gpu, 100u) / 100.0 : NAN;
  return last_;
}

}  // namespace gradwatch::torchmon
