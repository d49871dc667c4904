#include "runs_service.h"

#include <deque>
#include <mutex>

#include "gradwatch/common/happens_before.h"

#include "call.h"

namespace gradwatch::monitor {
namespace {

// Streams a run's updates to one reader until the run ends or the reader goes away.
class WatchStream final : public grpc::ServerWriteReactor<v1::RunUpdate>, public Watcher {
 public:
  WatchStream(Hub& hub, std::string run_id) : hub_(hub), run_id_(std::move(run_id)) {}

  void Refuse(const grpc::Status& status) {
    HappensBefore(this);
    Finish(status);
  }

  void Start() {
    if (!hub_.Watch(run_id_, this)) {
      HappensBefore(this);
      Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "no run " + run_id_));
    }
  }

  void Push(const v1::RunUpdate& update) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (ending_ || queue_.size() >= 10'000) return;  // a reader this far behind loses updates
    queue_.push_back(update);
    if (!writing_) Next();
  }

  void End() override {
    std::lock_guard<std::mutex> lock(mu_);
    ending_ = true;
    MaybeFinish();
  }

  void OnWriteDone(bool ok) override {
    HappensAfter(this);
    std::lock_guard<std::mutex> lock(mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) {
      queue_.clear();
      ending_ = true;
    }
    if (!queue_.empty()) Next();
    MaybeFinish();
  }

  void OnCancel() override {
    HappensAfter(this);
    std::lock_guard<std::mutex> lock(mu_);
    ending_ = true;
    MaybeFinish();
  }

  void OnDone() override {
    HappensAfter(this);
    hub_.Unwatch(run_id_, this);
    delete this;
  }

 private:
  void Next() {
    writing_ = true;
    HappensBefore(this);
    StartWrite(&queue_.front());
  }
  void MaybeFinish() {
    if (ending_ && !writing_ && !finished_) {
      finished_ = true;
      HappensBefore(this);
      Finish(grpc::Status::OK);
    }
  }

  Hub& hub_;
  std::string run_id_;
  std::mutex mu_;
  std::deque<v1::RunUpdate> queue_;
  bool writing_ = false, ending_ = false, finished_ = false;
};

}  // namespace

grpc::Status RunsService::Known(const std::string& run_id) const {
  if (hub_.GetRun(run_id)) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "no run \"" + run_id + "\"; `gradwatch runs` lists them");
}

grpc::Status RunsService::Admit(const grpc::CallbackServerContext& ctx, Role need, const std::string& run_id) const {
  grpc::Status denied = auth_.Check(ctx, need);
  return denied.ok() ? Known(run_id) : denied;
}

grpc::ServerUnaryReactor* RunsService::ListRuns(grpc::CallbackServerContext* ctx,
                                                const v1::ListRunsRequest*, v1::ListRunsResponse* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kViewer); !denied.ok()) return Done(ctx, denied);
  for (auto& run : hub_.ListRuns()) *resp->add_runs() = std::move(run);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RunsService::GetRun(grpc::CallbackServerContext* ctx,
                                              const v1::GetRunRequest* req, v1::Run* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kViewer); !denied.ok()) return Done(ctx, denied);
  auto run = hub_.GetRun(req->run_id());
  if (!run) return Done(ctx, Known(req->run_id()));
  *resp = std::move(*run);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RunsService::ListSteps(grpc::CallbackServerContext* ctx,
                                                 const v1::ListStepsRequest* req,
                                                 v1::ListStepsResponse* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kViewer, req->run_id()); !refused.ok()) return Done(ctx, refused);
  if (req->limit() > 10'000) {
    return Done(ctx, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "limit " + std::to_string(req->limit()) + " is over 10000"));
  }
  uint32_t limit = req->limit() == 0 ? 1000 : req->limit();
  auto steps = req->rank() == 0 ? store_.ListSteps(req->run_id(), req->after_step(), limit)
                                : store_.ListRankSteps(req->run_id(), req->rank(), req->after_step(), limit);
  for (auto& s : steps) *resp->add_steps() = std::move(s);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RunsService::ListEvals(grpc::CallbackServerContext* ctx,
                                                 const v1::ListEvalsRequest* req,
                                                 v1::ListEvalsResponse* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kViewer, req->run_id()); !refused.ok()) return Done(ctx, refused);
  for (auto& e : store_.ListEvals(req->run_id())) *resp->add_evals() = std::move(e);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RunsService::ListEvents(grpc::CallbackServerContext* ctx,
                                                  const v1::ListEventsRequest* req,
                                                  v1::ListEventsResponse* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kViewer, req->run_id()); !refused.ok()) return Done(ctx, refused);
  for (auto& e : store_.ListEvents(req->run_id())) *resp->add_events() = std::move(e);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* RunsService::ListCommands(grpc::CallbackServerContext* ctx,
                                                    const v1::ListCommandsRequest* req,
                                                    v1::ListCommandsResponse* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kViewer, req->run_id()); !refused.ok()) return Done(ctx, refused);
  auto* reactor = ctx->DefaultReactor();
  reads_.Post([this, reactor, run_id = req->run_id(), resp] {
    for (auto& c : hub_.ListCommands(run_id)) *resp->add_commands() = std::move(c);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerWriteReactor<v1::RunUpdate>* RunsService::WatchRun(grpc::CallbackServerContext* ctx,
                                                               const v1::WatchRunRequest* req) {
  auto* stream = new WatchStream(hub_, req->run_id());
  if (grpc::Status denied = auth_.Check(*ctx, Role::kViewer); !denied.ok()) {
    stream->Refuse(denied);
  } else {
    stream->Start();
  }
  return stream;
}

namespace {

// Finishes `reactor` when the command is acknowledged or times out.
CommandDone Reply(grpc::ServerUnaryReactor* reactor, v1::SendCommandResponse* resp) {
  return [reactor, resp](const v1::CommandRecord& record, bool acknowledged) {
    *resp->mutable_record() = record;
    resp->set_acknowledged(acknowledged);
    reactor->Finish(grpc::Status::OK);
  };
}

}  // namespace

grpc::ServerUnaryReactor* RunsService::SendCommand(grpc::CallbackServerContext* ctx,
                                                   const v1::SendCommandRequest* req,
                                                   v1::SendCommandResponse* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kOperator); !denied.ok()) return Done(ctx, denied);
  auto* reactor = ctx->DefaultReactor();
  v1::Command command = req->command();
  if (command.issued_by().empty()) command.set_issued_by("operator");
  if (command.reason().empty()) command.set_reason("sent by an operator");
  int64_t timeout = req->timeout_ms();  // 0: the hub's command_timeout_ms
  Status refused = hub_.SendCommand(req->run_id(), std::move(command), timeout, Reply(reactor, resp));
  if (!refused.ok()) reactor->Finish(GrpcStatus(refused));
  return reactor;
}

grpc::ServerUnaryReactor* RunsService::UndoCommand(grpc::CallbackServerContext* ctx,
                                                   const v1::UndoCommandRequest* req,
                                                   v1::SendCommandResponse* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kOperator); !denied.ok()) return Done(ctx, denied);
  auto* reactor = ctx->DefaultReactor();
  int64_t timeout = req->timeout_ms();  // 0: the hub's command_timeout_ms
  Status refused = hub_.Undo(req->run_id(), req->command_id(), timeout, Reply(reactor, resp));
  if (!refused.ok()) reactor->Finish(GrpcStatus(refused));
  return reactor;
}

grpc::ServerUnaryReactor* RunsService::UpdatePolicy(grpc::CallbackServerContext* ctx,
                                                    const v1::UpdatePolicyRequest* req, v1::Run* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kOperator, req->run_id()); !refused.ok()) return Done(ctx, refused);
  auto* reactor = ctx->DefaultReactor();
  // Answered once the detectors are rebuilt with the new config (the hub's rebuild thread).
  Status refused = hub_.UpdatePolicy(
      req->run_id(), std::map<std::string, double>(req->thresholds().begin(), req->thresholds().end()),
      std::map<std::string, double>(req->policy().begin(), req->policy().end()),
      [reactor, resp](const Status& status, const v1::Run& run) {
        if (status.ok()) *resp = run;
        reactor->Finish(GrpcStatus(status));
      });
  if (!refused.ok()) reactor->Finish(GrpcStatus(refused));
  return reactor;
}

grpc::ServerUnaryReactor* RunsService::ExplainRun(grpc::CallbackServerContext* ctx,
                                                  const v1::ExplainRunRequest* req,
                                                  v1::ExplainRunResponse* resp) {
  if (grpc::Status refused = Admit(*ctx, Role::kViewer, req->run_id()); !refused.ok()) return Done(ctx, refused);
  auto* reactor = ctx->DefaultReactor();
  reads_.Post([this, reactor, run_id = req->run_id(), resp] {
    resp->set_text(hub_.Explain(run_id));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace gradwatch::monitor
