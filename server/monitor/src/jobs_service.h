// The Jobs service: launch, list, stop and read the logs of training jobs, on the
// callback API, over gradwatch::jobs::Jobs. Launch and StopJob need the operator role,
// the rest the viewer role.
#pragma once

#include <mutex>
#include <set>

#include "auth.h"
#include "gradwatch/jobs/jobs.h"
#include "gradwatch/monitor/hub.h"
#include "gradwatch/v1/jobs.grpc.pb.h"

namespace gradwatch::monitor {

class LogStream;

class JobsService final : public v1::Jobs::CallbackService {
 public:
  JobsService(jobs::Jobs& jobs, Hub& hub, const Auth& auth) : jobs_(jobs), hub_(hub), auth_(auth) {}

  grpc::ServerUnaryReactor* Launch(grpc::CallbackServerContext* ctx, const v1::LaunchRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* StopJob(grpc::CallbackServerContext* ctx, const v1::StopJobRequest* req,
                                    v1::Job* resp) override;
  grpc::ServerWriteReactor<v1::LogChunk>* Logs(grpc::CallbackServerContext* ctx,
                                               const v1::LogsRequest* req) override;

  // Wakes the log streams that follow a job and wait for output; the monitor's
  // housekeeping tick calls it.
  void Tick();

 private:
  friend class LogStream;
  void Wait(LogStream* stream);
  void Forget(LogStream* stream);

  jobs::Jobs& jobs_;
  Hub& hub_;
  const Auth& auth_;
  std::mutex mu_;
  std::set<LogStream*> waiting_;  // guarded by mu_; a stream leaves it in OnDone
};

}  // namespace gradwatch::monitor
