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
    case EventKind::kRankDeparture: return "rank_departure";
    case EventKind::kStraggler: return "straggler";
    case EventKind::kScalarLimit: return "scalar_limit";
    case EventKind::kHang: return "hang";
    case EventKind::kRankLag: return "rank_lag";
    case EventKind::kRankLost: return "rank_lost";
  }
  return "unknown";
}

const std::vector<EventKind>& AllEventKinds() {
  using K = EventKind;
  static const std::vector<EventKind> kinds = {
      K::kNonFinite,  K::kGradSpike,   K::kLossSpike,     K::kDivergence, K::kCollapse,
      K::kVanishing,  K::kValCollapse, K::kLrJump,        K::kUpdateSize, K::kNoProgress,
      K::kDataSuspect, K::kRankDeparture, K::kStraggler, K::kScalarLimit, K::kHang,
      K::kRankLag,    K::kRankLost};
  return kinds;
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

std::string Times(double ratio) { return Format(ratio >= 100 ? "%.0fx" : "%.3gx", ratio); }

}  // namespace gradwatch::detect
