#include "command_ledger.h"

#include "convert.h"

namespace gradwatch::monitor {

void CommandLedger::Add(Pending pending) {
  std::string id = pending.record.command().id();
  pending_[id] = std::move(pending);
}

std::optional<CommandLedger::Pending> CommandLedger::Acknowledge(const v1::CommandAck& ack) {
  auto it = pending_.find(ack.command_id());
  if (it == pending_.end()) return std::nullopt;
  Pending p = std::move(it->second);
  pending_.erase(it);
  *p.record.mutable_ack() = ack;
  return p;
}

std::vector<CommandLedger::Pending> CommandLedger::Expire(int64_t now_millis) {
  std::vector<Pending> out;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.deadline_millis <= now_millis) {
      out.push_back(std::move(it->second));
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<CommandLedger::Pending> CommandLedger::TakeAll() {
  std::vector<Pending> out;
  for (auto& [id, p] : pending_) out.push_back(std::move(p));
  pending_.clear();
  return out;
}

Status InverseOf(const v1::CommandRecord& original, v1::Command* undo) {
  const v1::Command& c = original.command();
  if (c.has_set_clipping()) {
    *undo->mutable_set_clipping() = original.previous_clipping();
  } else if (c.has_scale_learning_rate()) {
    undo->set_scale_learning_rate(1.0 / c.scale_learning_rate());
  } else if (c.has_set_mode()) {
    undo->set_set_mode(original.previous_mode());
  } else {
    return Status::Precondition(std::string("a ") + ActionName(c) +
                                " cannot be undone (only clipping, learning-rate and mode commands)");
  }
  undo->set_issued_by("operator");
  undo->set_reason("undo of " + c.id() + " (" + ActionName(c) + ")");
  return {};
}

}  // namespace gradwatch::monitor
