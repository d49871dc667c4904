// Device utilisation through a fake NVML (fake_nvml.cc, built as a shared library whose path
// comes in FAKE_NVML_PATH): which device a CUDA index is, what Open refuses and says, and how
// often NVML is asked.
#include "gradwatch/torch/device_utilization.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>

#include "fake_nvml.h"

namespace gradwatch::torchmon {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The fake's counters, reached through the same loaded copy DeviceUtilization uses.
class FakeNvml : public ::testing::Test {
 protected:
  void SetUp() override {
    library_ = dlopen(FAKE_NVML_PATH, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(library_, nullptr) << dlerror();
    auto get = reinterpret_cast<FakeNvmlState (*)()>(dlsym(library_, "FakeNvml"));
    ASSERT_NE(get, nullptr);
    fake_ = get();
    *fake_.init_result = 0;
    *fake_.utilization_calls = 0;
    for (int i = 0; i < 4; ++i) *fake_.utilization_result[i] = 0;
  }
  void TearDown() override {
    if (library_) dlclose(library_);
  }
  std::unique_ptr<DeviceUtilization> Open(const NvmlDevice& device, std::string* why) {
    return DeviceUtilization::Open(device, why, FAKE_NVML_PATH);
  }
  void* library_ = nullptr;
  FakeNvmlState fake_{};
};

TEST(NvmlDeviceOf, is_the_cuda_index_when_every_device_is_visible) {
  EXPECT_EQ(NvmlDeviceOf(2, nullptr).index, 2);
  EXPECT_NE(NvmlDeviceOf(-1, nullptr).error, "");
}

TEST(NvmlDeviceOf, follows_cuda_visible_devices_by_index_or_uuid) {
  EXPECT_EQ(NvmlDeviceOf(0, "3,1").index, 3);
  EXPECT_EQ(NvmlDeviceOf(1, " 3 , 1 ").index, 1);
  const NvmlDevice by_uuid = NvmlDeviceOf(1, "2,GPU-8a1f-77");
  EXPECT_EQ(by_uuid.index, -1);
  EXPECT_EQ(by_uuid.uuid, "GPU-8a1f-77");
}

TEST(NvmlDeviceOf, stops_where_cuda_does_and_says_when_the_index_is_not_visible) {
  EXPECT_EQ(NvmlDeviceOf(0, "1,x,2").index, 1);
  EXPECT_EQ(NvmlDeviceOf(1, "1,x,2").error,
            "CUDA device 1 is not among the 1 that CUDA_VISIBLE_DEVICES=\"1,x,2\" makes visible");
  EXPECT_NE(NvmlDeviceOf(0, "").error, "");
}

TEST_F(FakeNvml, reads_the_device_share_and_asks_at_most_once_per_period) {
  std::string why;
  auto u = Open(NvmlDeviceOf(2, nullptr), &why);
  ASSERT_NE(u, nullptr) << why;
  const Clock::time_point t0{};
  EXPECT_DOUBLE_EQ(u->Fraction(t0 + 10s), 0.37);
  *fake_.gpu_percent[2] = 90;
  EXPECT_DOUBLE_EQ(u->Fraction(t0 + 10s + 999ms), 0.37);  // within the second: the last answer
  EXPECT_EQ(*fake_.utilization_calls, 1);
  EXPECT_DOUBLE_EQ(u->Fraction(t0 + 11s), 0.90);
  EXPECT_EQ(*fake_.utilization_calls, 2);
  *fake_.gpu_percent[2] = 37;
}

TEST_F(FakeNvml, finds_a_device_by_uuid) {
  std::string why;
  auto u = Open(NvmlDeviceOf(0, "GPU-fake-3"), &why);
  ASSERT_NE(u, nullptr) << why;
  EXPECT_DOUBLE_EQ(u->Fraction(Clock::time_point{}), 0.40);
  EXPECT_EQ(Open(NvmlDeviceOf(0, "GPU-missing"), &why), nullptr);
  EXPECT_EQ(why, "nvmlDeviceGetHandleByUUID failed: fake error 6");
}

TEST_F(FakeNvml, a_failed_query_is_nan_and_the_next_period_asks_again) {
  std::string why;
  auto u = Open(NvmlDeviceOf(1, nullptr), &why);
  ASSERT_NE(u, nullptr) << why;
  *fake_.utilization_result[1] = 3;  // NVML_ERROR_NOT_SUPPORTED
  EXPECT_TRUE(std::isnan(u->Fraction(Clock::time_point{})));
  *fake_.utilization_result[1] = 0;
  EXPECT_DOUBLE_EQ(u->Fraction(Clock::time_point{} + 1s), 0.20);
}

TEST_F(FakeNvml, refuses_with_nvmls_own_error_and_shuts_nvml_down_when_done) {
  std::string why;
  EXPECT_EQ(Open(NvmlDeviceOf(7, nullptr), &why), nullptr);
  EXPECT_EQ(why, "nvmlDeviceGetHandleByIndex_v2 failed: fake error 2");
  *fake_.init_result = 9;
  EXPECT_EQ(Open(NvmlDeviceOf(0, nullptr), &why), nullptr);
  EXPECT_EQ(why, "nvmlInit_v2 failed: fake error 9");
  *fake_.init_result = 0;
  const int before = *fake_.shutdowns;
  Open(NvmlDeviceOf(0, nullptr), &why).reset();
  EXPECT_EQ(*fake_.shutdowns, before + 1);
}

TEST(DeviceUtilization, says_which_library_could_not_be_loaded) {
  std::string why;
  EXPECT_EQ(DeviceUtilization::Open(NvmlDeviceOf(0, nullptr), &why, "/nonexistent/libnvidia-ml.so.1"), nullptr);
  EXPECT_EQ(why.rfind("cannot load NVML (/nonexistent/libnvidia-ml.so.1): ", 0), 0u) << why;
  EXPECT_EQ(DeviceUtilization::Open(NvmlDeviceOf(3, ""), &why), nullptr);
  EXPECT_EQ(why, "CUDA device 3 is not among the 0 that CUDA_VISIBLE_DEVICES=\"\" makes visible");
}

}  // namespace
}  // namespace gradwatch::torchmon
