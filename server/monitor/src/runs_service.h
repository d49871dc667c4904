// The Runs service on the callback API, backed by the hub (live state) and the store
// (the record). Calls that read a run's whole record (ExplainRun, ListCommands with each
// command's effect) run on the service's own read threads, never on gRPC's reactions.
#pragma once

#include "auth.h"
#include "gradwatch/common/work_queue.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/store/store.h"
#include "gradwatch/v1/runs.grpc.pb.h"

namespace gradwatch::monitor {

class RunsService final : public v1::Runs::CallbackService {
 public:
  RunsService(Hub& hub, store::Store& store, const Auth& auth) : hub_(hub), store_(store), auth_(auth) {}

  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* ctx, const v1::ListRunsRequest* req,
                                     v1::ListRunsResponse* resp) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* ctx, const v1::GetRunRequest* req,
                                   v1::Run* resp) override;
  grpc::ServerUnaryReactor* ListSteps(grpc::CallbackServerContext* ctx, const v1::ListStepsRequest* req,
                                      v1::ListStepsResponse* resp) override;
  grpc::ServerUnaryReactor* ListEvals(grpc::CallbackServerContext* ctx, const v1::ListEvalsRequest* req,
                                      v1::ListEvalsResponse* resp) override;
  grpc::ServerUnaryReactor* ListEvents(grpc::CallbackServerContext* ctx, const v1::ListEventsRequest* req,
                                       v1::ListEventsResponse* resp) override;
  grpc::ServerUnaryReactor* ListCommands(grpc::CallbackServerContext* ctx,
                                         const v1::ListCommandsRequest* req,
                                         v1::ListCommandsResponse* resp) override;
  grpc::ServerWriteReactor<v1::RunUpdate>* WatchRun(grpc::CallbackServerContext* ctx,
                                                    const v1::WatchRunRequest* req) override;
  grpc::ServerUnaryReactor* SendCommand(grpc::CallbackServerContext* ctx,
                                        const v1::SendCommandRequest* req,
                                        v1::SendCommandResponse* resp) override;
  grpc::ServerUnaryReactor* UndoCommand(grpc::CallbackServerContext* ctx, const v1::UndoCommandRequest* req,
                                        v1::SendCommandResponse* resp) override;
  grpc::ServerUnaryReactor* UpdatePolicy(grpc::CallbackServerContext* ctx, const v1::UpdatePolicyRequest* req,
                                         v1::Run* resp) override;
  grpc::ServerUnaryReactor* ExplainRun(grpc::CallbackServerContext* ctx, const v1::ExplainRunRequest* req,
                                       v1::ExplainRunResponse* resp) override;

 private:
  // NOT_FOUND naming the run, or OK.
  grpc::Status Known(const std::string& run_id) const;
  // The caller's role (Auth::Check), then Known(run_id): OK, or the status to end the call with.
  grpc::Status Admit(const grpc::CallbackServerContext& ctx, Role need, const std::string& run_id) const;

  Hub& hub_;
  store::Store& store_;
  const Auth& auth_;
  WorkQueue reads_{2};  // last: its tasks use the members above
};

}  // namespace gradwatch::monitor
