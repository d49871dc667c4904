#include "gradwatch/detect/event.h"

#include <cstdarg>
#include <cstdio>

#include "format.h"

namespace gradwatch::detect {

const char* ToString(EventKind kind) {
  switch (kind) {
    case EventKind::kNonFinite: return "non_finite";
    case EventKind::kGradSpike: return "grad_spike";
    case EventKind::kLossSpike: return "loss_spike";
    case EventKind::kDivergence: return "divergence";
    case EventKind::kCollapse: return "collapse";
    case EventKind::kVanishing: return "vanishing";
    case EventKind::kValCollapse: return "val_collapse";
    case EventKind::kLrJump: return "lr_jump";
    case EventKind::kUpdateSize: return "update_size";
    case EventKind::kNoProgress: return "no_progress";
    case EventKind::kDataSuspect: return "data_suspect";
    case EventKind::kScalarLimit: return "scalar_limit";
  }
  return "unknown";
}

const char* ToString(Severity severity) {
  return severity == Severity::kCritical ? "critical" : "warning";
}

std::string Format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? n : 0, '\0');
  std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

}  // namespace gradwatch::detect
