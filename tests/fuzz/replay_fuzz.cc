// libFuzzer target: the replay parsers (gradwatch CSV and Keras CSVLogger) and the
// detectors behind them must take any bytes without crashing: bad input is an error
// naming its line and column, never a crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gradwatch/detect/replay.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto format : {gradwatch::detect::CsvFormat::kAuto, gradwatch::detect::CsvFormat::kGradwatch,
                      gradwatch::detect::CsvFormat::kKeras}) {
    auto parsed = gradwatch::detect::ParseCsv(text, "fuzz.csv", format);
    if (parsed.ok()) {
      gradwatch::detect::RunInfo info;
      info.loss_upper_bound = 1;
      gradwatch::detect::ReplayOffline(parsed.records, info, gradwatch::detect::Thresholds{});
    } else if (parsed.error.empty()) {
      __builtin_trap();  // a failure must say why
    }
  }
  return 0;
}
