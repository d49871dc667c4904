#include "gradwatch/torch/link.h"

#include <unistd.h>

#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <cstdlib>
#include <stdexcept>

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
  hello.set_rank(o.rank);
  hello.set_world_size(o.world_size);
  reporter::ReporterOptions ro;
  ro.address = o.address;
  if (const char* token = std::getenv("GRADWATCH_TOKEN")) ro.token = token;  // a reporter token
  ro.tls = reporter::TlsFromEnv();
  ro.spool_path = o.spool;
  ro.heartbeat_interval = o.heartbeat_interval;
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

size_t MonitorLink::PendingCommands() const { return reporter_->PendingCommands(); }

void MonitorLink::SetPhase(uint64_t step, Phase phase) {
  v1::Heartbeat::Phase p = v1::Heartbeat::PHASE_UNSPECIFIED;
  switch (phase) {
    case Phase::kCompute: p = v1::Heartbeat::PHASE_COMPUTE; break;
    case Phase::kCollective: p = v1::Heartbeat::PHASE_COLLECTIVE; break;
    case Phase::kVerdict: p = v1::Heartbeat::PHASE_VERDICT; break;
    case Phase::kNone: break;
  }
  reporter_->SetPhase(step, p);
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

void MonitorLink::Close(std::chrono::milliseconds deadline, bool stopped) { reporter_->Close(deadline, stopped); }

LinkStats MonitorLink::stats() const {
  auto s = reporter_->stats();
  return {s.acked_through, s.dropped, s.gate_timeouts, s.connected, s.refused};
}

std::string EncodeCommands(const std::vector<Command>& commands) {
  std::string bytes;
  google::protobuf::io::StringOutputStream out(&bytes);
  for (const auto& c : commands) google::protobuf::util::SerializeDelimitedToZeroCopyStream(ToWire(c), &out);
  return bytes;
}

std::vector<Command> DecodeCommands(const std::string& bytes) {
  google::protobuf::io::ArrayInputStream in(bytes.data(), static_cast<int>(bytes.size()));
  std::vector<Command> out;
  v1::Command c;
  bool clean_eof = false;
  while (google::protobuf::util::ParseDelimitedFromZeroCopyStream(&c, &in, &clean_eof)) out.push_back(FromWire(c));
  if (!clean_eof) throw std::runtime_error("commands from rank 0: cannot parse " + std::to_string(bytes.size()) + " bytes");
  return out;
}

}  // namespace gradwatch::torchmon
