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
  if (ranks_) {
    *p.record.add_rank_acks() = ack;
    recent_[ack.command_id()] = p.record;
    recent_order_.push_back(ack.command_id());
    if (recent_order_.size() > kRecent) {
      recent_.erase(recent_order_.front());
      recent_order_.erase(recent_order_.begin());
    }
  }
  return p;
}

namespace {

bool AckedBy(const v1::CommandRecord& record, uint32_t rank) {
  for (const auto& a : record.rank_acks()) {
    if (a.rank() == rank) return true;
  }
  return false;
}

}  // namespace

std::optional<v1::CommandRecord> CommandLedger::AddRankAck(const v1::CommandAck& ack) {
  if (auto it = pending_.find(ack.command_id()); it != pending_.end()) {
    if (!AckedBy(it->second.record, ack.rank())) *it->second.record.add_rank_acks() = ack;
    return std::nullopt;
  }
  auto it = recent_.find(ack.command_id());
  if (it == recent_.end() || AckedBy(it->second, ack.rank())) return std::nullopt;
  *it->second.add_rank_acks() = ack;
  return it->second;
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
