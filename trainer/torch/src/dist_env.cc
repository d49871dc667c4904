#include "gradwatch/torch/dist_env.h"

#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace gradwatch::torchmon {
namespace {

[[noreturn]] void Fail(const std::string& variable, const std::string& why) {
  throw std::invalid_argument(variable + ": " + why);
}

// A non-negative decimal integer up to `max`, as the whole value.
uint64_t Number(const char* variable, const char* value, uint64_t max) {
  const std::string s = value;
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
    Fail(variable, "expected a non-negative integer, got \"" + s + "\"");
  }
  const uint64_t n = std::stoull(s);
  if (n > max) Fail(variable, "must be <= " + std::to_string(max) + ", got " + s);
  return n;
}

int Int(const EnvLookup& env, const char* variable, int max, int fallback) {
  const char* v = env(variable);
  return v ? static_cast<int>(Number(variable, v, static_cast<uint64_t>(max))) : fallback;
}

void CheckLayout(DistEnv& d, const char* rank_var, const char* world_var) {
  if (d.world_size < 1) Fail(world_var, "must be >= 1, got " + std::to_string(d.world_size));
  if (d.rank >= d.world_size) {
    Fail(rank_var, std::to_string(d.rank) + " is not below " + world_var + " " + std::to_string(d.world_size));
  }
}

uint16_t Port(const char* value) {
  const uint64_t port = Number("MASTER_PORT", value, 65535);
  if (port == 0) Fail("MASTER_PORT", "must be in 1..65535, got 0");
  return static_cast<uint16_t>(port);
}

DistEnv FromTorchrun(const EnvLookup& env) {
  if (!env("RANK")) Fail("RANK", "unset while WORLD_SIZE is set");
  if (!env("WORLD_SIZE")) Fail("WORLD_SIZE", "unset while RANK is set");
  DistEnv d;
  d.source = "torchrun";
  d.world_size = Int(env, "WORLD_SIZE", kMaxWorldSize, 1);
  d.rank = Int(env, "RANK", kMaxWorldSize, 0);
  d.local_rank = Int(env, "LOCAL_RANK", kMaxWorldSize, 0);
  CheckLayout(d, "RANK", "WORLD_SIZE");
  if (d.world_size > 1) {
    const char* addr = env("MASTER_ADDR");
    const char* port = env("MASTER_PORT");
    if (!addr || !*addr) Fail("MASTER_ADDR", "unset for a job of " + std::to_string(d.world_size) + " ranks");
    if (!port) Fail("MASTER_PORT", "unset for a job of " + std::to_string(d.world_size) + " ranks");
    d.master_addr = addr;
    d.master_port = Port(port);
  }
  return d;
}

DistEnv FromSlurm(const EnvLookup& env) {
  DistEnv d;
  d.source = "slurm";
  const char* ntasks = env("SLURM_NTASKS") ? "SLURM_NTASKS" : "SLURM_NPROCS";
  if (!env(ntasks)) Fail("SLURM_NTASKS", "unset while SLURM_PROCID is set");
  d.world_size = Int(env, ntasks, kMaxWorldSize, 1);
  d.rank = Int(env, "SLURM_PROCID", kMaxWorldSize, 0);
  d.local_rank = Int(env, "SLURM_LOCALID", kMaxWorldSize, 0);
  CheckLayout(d, "SLURM_PROCID", ntasks);
  if (d.world_size == 1) return d;
  if (const char* addr = env("MASTER_ADDR"); addr && *addr) {
    d.master_addr = addr;
  } else {
    const char* list_var = env("SLURM_STEP_NODELIST") ? "SLURM_STEP_NODELIST"
                           : env("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
    const char* list = env(list_var);
    if (!list) Fail("MASTER_ADDR", "unset, and no SLURM_STEP_NODELIST or SLURM_JOB_NODELIST to take it from");
    try {
      d.master_addr = FirstSlurmHost(list);
    } catch (const std::invalid_argument& e) {
      Fail(list_var, e.what());
    }
  }
  if (const char* port = env("MASTER_PORT")) {
    d.master_port = Port(port);
  } else {
    const char* job = env("SLURM_JOB_ID") ? "SLURM_JOB_ID" : "SLURM_JOBID";
    if (!env(job)) Fail("MASTER_PORT", "unset, and no SLURM_JOB_ID to derive it from");
    d.master_port = SlurmPort(Number(job, env(job), std::numeric_limits<uint64_t>::max()));
  }
  return d;
}

}  // namespace

DistEnv ReadDistEnv(const EnvLookup& env) {
  if (env("RANK") || env("WORLD_SIZE")) return FromTorchrun(env);
  if (env("SLURM_PROCID")) return FromSlurm(env);
  return DistEnv{};
}

DistEnv ReadDistEnv() {
  return ReadDistEnv([](const char* name) -> const char* { return std::getenv(name); });
}

std::string FirstSlurmHost(const std::string& nodelist) {
  const auto malformed = [&] { return std::invalid_argument("cannot read the node list \"" + nodelist + "\""); };
  // The first entry ends at the first comma outside brackets: "a[3,5-7]-ib" of "a[3,5-7]-ib,b2".
  size_t end = 0;
  bool inside = false;
  for (; end < nodelist.size() && (inside || nodelist[end] != ','); ++end) {
    const char c = nodelist[end];
    if (c == '[' || c == ']') {
      if (inside == (c == '[')) throw malformed();  // nested, or a ']' with no '['
      inside = c == '[';
    }
  }
  const std::string first = nodelist.substr(0, end);
  if (first.empty() || inside) throw malformed();
  const size_t open = first.find('[');
  if (open == std::string::npos) return first;
  const size_t close = first.find(']', open);
  // The range's first number as written, zero padding kept: "01" of "[01-04,07]".
  const std::string ranges = first.substr(open + 1, close - open - 1);
  const std::string number = ranges.substr(0, ranges.find_first_of("-,"));
  if (open == 0 || number.empty() || number.find_first_not_of("0123456789") != std::string::npos ||
      first.find('[', close) != std::string::npos) {
    throw malformed();
  }
  return first.substr(0, open) + number + first.substr(close + 1);
}

uint16_t SlurmPort(uint64_t job_id) { return static_cast<uint16_t>(10'000 + job_id % 20'000); }

}  // namespace gradwatch::torchmon
