// libFuzzer target: the tokens file parser (auth.h's ParseTokens). Any bytes give either
// the grants or an error naming what is wrong, never a crash or an exception; and never
// both, nor an empty grant list without an error (that would turn authentication off).
#include <cstddef>
#include <cstdint>
#include <string>

#include "auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = gradwatch::monitor::ParseTokens(text);
  if (parsed.error.empty() == parsed.grants.empty()) __builtin_trap();
  for (const auto& [token, grant] : parsed.grants) {
    if (token.size() < 16 || token.size() > 1024) __builtin_trap();
    if (grant.role == gradwatch::monitor::Role::kReporter && grant.run_id.empty()) __builtin_trap();
  }
  return 0;
}
