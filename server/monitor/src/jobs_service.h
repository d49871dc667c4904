// The Jobs service: launch, list, watch, stop and read the logs of training jobs, on the
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

// A stream waiting for something new; the service's Tick wakes it.
class Waiter {
 public:
  virtual ~Waiter() = default;
  // True while it still waits.
  virtual bool Wake() = 0;
};

template <typename Message>
class FollowStream;
class LogStream;
class JobStream;

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
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* ctx,
                                              const v1::GetJobRequest* req) override;

  // Wakes the log and job streams that wait for something new; the monitor's housekeeping
  // tick calls it.
  void Tick();

 private:
  template <typename Message>
  friend class FollowStream;
  friend class LogStream;
  friend class JobStream;
  void Wait(Waiter* stream);
  void Forget(Waiter* stream);

  jobs::Jobs& jobs_;
  Hub& hub_;
  const Auth& auth_;
  std::mutex mu_;
  std::set<Waiter*> waiting_;  // guarded by mu_; a stream leaves it in OnDone
};

}  // namespace gradwatch::monitor
