// libFuzzer target: a launch request's config, the JSON any operator (or a stolen operator
// token) sends to Jobs.Launch. Any bytes must be refused with InvalidLaunch or accepted,
// never crash or throw anything else; and an accepted config must write only inside the
// job's out/ folder and satisfy the trainer's own Validate.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gradwatch/jobs/launch_config.h"
#include "train/config.h"

namespace {

using gradwatch::jobs::InvalidLaunch;
using gradwatch::jobs::LaunchContext;

bool Inside(const std::string& path, const std::string& folder) {
  return path.rfind(folder + "/", 0) == 0 && path.find("/../") == std::string::npos;
}

void CheckAccepted(const std::string& written, const LaunchContext& ctx) {
  auto config = gradwatch::train::ParseConfigJson(written, "written");  // throws: a crash
  if (!gradwatch::train::Validate(config).empty()) __builtin_trap();
  const std::string out = gradwatch::jobs::OutputDir(ctx.job_dir);
  for (const std::string* p : {&config.trace_csv, &config.spool, &config.checkpoint_dir}) {
    if (!p->empty() && !Inside(*p, out)) __builtin_trap();  // a job could reach the monitor's files
  }
  if (config.spool.empty() || config.summary_json != ctx.job_dir + "/summary.json") __builtin_trap();
  if (config.threads > ctx.max_threads || config.monitor != ctx.monitor_address) __builtin_trap();
  if (!config.data.dir.empty() && !Inside(config.data.dir + "/", ctx.datasets_dir)) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* run_id : {"", "fz"}) {
    for (const char* datasets : {"", "/srv/datasets"}) {
      const LaunchContext ctx{"/var/gw/jobs/fz", "127.0.0.1:7070", datasets, 8};
      try {
        gradwatch::jobs::RequestedRunId(text, run_id);
        CheckAccepted(gradwatch::jobs::PrepareLaunchConfig(text, run_id, ctx), ctx);
      } catch (const InvalidLaunch& e) {
        if (e.field().empty()) __builtin_trap();  // a refusal names its field
      }
    }
  }
  return 0;
}
