// A stand-in for libnvidia-ml.so with four devices, for device_utilization_test: the entry
// points DeviceUtilization uses, plus FakeNvml(), which the test reaches with dlsym to set
// answers and count calls.
#include "fake_nvml.h"

#include <cstring>

namespace {

struct Device {
  const char* uuid;
  unsigned int gpu_percent;
  int result;  // what nvmlDeviceGetUtilizationRates returns
};

struct State {
  int init_result = 0;
  int utilization_calls = 0;
  int shutdowns = 0;
  Device devices[4] = {{"GPU-fake-0", 10, 0}, {"GPU-fake-1", 20, 0}, {"GPU-fake-2", 37, 0}, {"GPU-fake-3", 40, 0}};
};

State state;

}  // namespace

extern "C" {

FakeNvmlState FakeNvml() {
  FakeNvmlState s{&state.init_result, &state.utilization_calls, &state.shutdowns, {}, {}};
  for (int i = 0; i < 4; ++i) {
    s.gpu_percent[i] = &state.devices[i].gpu_percent;
    s.utilization_result[i] = &state.devices[i].result;
  }
  return s;
}

struct nvmlUtilization_t {
  unsigned int gpu, memory;
};

int nvmlInit_v2() { return state.init_result; }
int nvmlShutdown() { return ++state.shutdowns, 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void** device) {
  if (index >= 4) return 2;  // NVML_ERROR_INVALID_ARGUMENT
  *device = &state.devices[index];
  return 0;
}
int nvmlDeviceGetHandleByUUID(const char* uuid, void** device) {
  for (Device& d : state.devices) {
    if (std::strcmp(d.uuid, uuid) == 0) return *device = &d, 0;
  }
  return 6;  // NVML_ERROR_NOT_FOUND
}
int nvmlDeviceGetUtilizationRates(void* device, nvmlUtilization_t* u) {
  ++state.utilization_calls;
  const Device& d = *static_cast<Device*>(device);
  if (d.result != 0) return d.result;
  u->gpu = d.gpu_percent;
  u->memory = 0;
  return 0;
}
const char* nvmlErrorString(int result) {
  static char text[32];
  std::strcpy(text, "fake error ");
  text[11] = static_cast<char>('0' + result % 10);
  text[12] = '\0';
  return text;
}

}  // extern "C"
