// What fake_nvml.cc (a stand-in libnvidia-ml with four devices) lets a test set and count,
// returned by its extern "C" FakeNvml(), which the test finds with dlsym.
#pragma once

struct FakeNvmlState {
  int* init_result;                 // what nvmlInit_v2 returns
  int* utilization_calls;           // nvmlDeviceGetUtilizationRates calls so far
  int* shutdowns;                   // nvmlShutdown calls so far
  unsigned int* gpu_percent[4];     // each device's answer
  int* utilization_result[4];       // what each device's query returns (0 = NVML_SUCCESS)
};
