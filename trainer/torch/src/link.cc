#include "gradwatch/torch/link.h"

#include <unistd.h>

#include <cstdlib>

#include "gradwatch/reporter/reporter.h"
#include "gradwatch/torch/wire.h"

namespace gradwatch::torchmon {

MonitorLink::MonitorLink(const LinkOptions& o) {
  v1::Hello hello;
  hello.set_run_id(o.run_id);
  for (const auto& n : o.layer_names) hello.add_layer_names(n);
  *hello.mutable_config() = ToWire(o.run);
  hello.set_mode(ToWire(o.mode));
  hello.set_trainer_version("gradwatch::torch 0.1.0");
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  hello.set_host(host);
  hello.set_device(o.device);
  reporter::ReporterOptions ro;
  ro.address = o.address;
  if (const char* token = std::getenv("GRADWATCH_TOKEN")) ro.token = token;  // a reporter token
  ro.tls = reporter::TlsFromEnv();
  ro.spool_path = o.spool;
  reporter_ = std::make_unique<reporter::Reporter>(ro, hello);
}

MonitorLink::~MonitorLink() = default;

void MonitorLink::Report(const StepRecord& step) { reporter_->Report(ToWire(step)); }
void MonitorLink::Report(const EvalRecord& eval) { reporter_->Report(ToWire(eval)); }

std::vector<Command> MonitorLink::TakeCommands() {
  std::vector<Command> out;
  for (const auto& c : reporter_->TakeCommands()) out.push_back(FromWire(c));
  return out;
}

void MonitorLink::Ack(const CommandAck& ack) { reporter_->AckCommand(ToWire(ack)); }

std::optional<Verdict> MonitorLink::AwaitVerdict(uint64_t step, std::chrono::milliseconds deadline) {
  auto v = reporter_->AwaitVerdict(step, deadline);
  if (!v) return std::nullopt;
  Verdict out;
  switch (v->decision()) {
    case v1::Verdict::DECISION_SKIP: out.decision = Verdict::Decision::kSkip; break;
    case v1::Verdict::DECISION_CLIP: out.decision = Verdict::Decision::kClip; break;
    case v1::Verdict::DECISION_SCALE_LR:
      // A scale outside (0, 1] would not be a veto: proceed as proposed.
      if (v->lr_scale() > 0 && v->lr_scale() <= 1) out.decision = Verdict::Decision::kScaleLr;
      break;
    default: break;
  }
  out.clip_norm = v->clip_norm();
  out.lr_scale = v->lr_scale();
  out.reason = v->reason();
  return out;
}

void MonitorLink::Close(std::chrono::milliseconds deadline) { reporter_->Close(deadline); }

LinkStats MonitorLink::stats() const {
  auto s = reporter_->stats();
  return {s.acked_through, s.dropped, s.gate_timeouts, s.connected, s.refused};
}

}  // namespace gradwatch::torchmon
