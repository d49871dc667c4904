#include "jobs_service.h"

#include <fstream>

#include "call.h"
#include "gradwatch/common/happens_before.h"
#include "gradwatch/jobs/launch_config.h"
#include "names.h"

namespace gradwatch::monitor {
namespace {

grpc::Status StatusOf(const std::exception& e) {
  if (dynamic_cast<const jobs::InvalidLaunch*>(&e)) return {grpc::StatusCode::INVALID_ARGUMENT, e.what()};
  if (const auto* j = dynamic_cast<const jobs::JobError*>(&e)) {
    switch (j->code()) {
      case jobs::JobError::Code::kAlreadyExists: return {grpc::StatusCode::ALREADY_EXISTS, e.what()};
      case jobs::JobError::Code::kNotFound: return {grpc::StatusCode::NOT_FOUND, e.what()};
      case jobs::JobError::Code::kUnavailable: return {grpc::StatusCode::FAILED_PRECONDITION, e.what()};
      case jobs::JobError::Code::kResourceExhausted: return {grpc::StatusCode::RESOURCE_EXHAUSTED, e.what()};
    }
  }
  return {grpc::StatusCode::INTERNAL, e.what()};
}

}  // namespace

// A server stream that sends what there is, and when there is nothing new yet waits to be
// woken by the service's Tick. Subclasses say what comes next.
template <typename Message>
class FollowStream : public grpc::ServerWriteReactor<Message>, public Waiter {
 public:
  explicit FollowStream(JobsService& service) : service_(service) {}

  // Lock order: the service's mutex, then a stream's. So a stream registers as waiting
  // only after releasing its own (gRPC runs OnDone only after Start and OnWriteDone
  // returned, so the stream is alive then).
  void Start() {
    bool wait;
    {
      std::lock_guard<std::mutex> lock(mu_);
      wait = NextLocked();
    }
    if (wait) service_.Wait(this);
  }

  // Called by the service's Tick with its mutex held; true = still waiting.
  bool Wake() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!waiting_) return false;
    waiting_ = false;
    return NextLocked();
  }

  void OnWriteDone(bool ok) override {
    HappensAfter(this);
    bool wait = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ok) {
        FinishLocked(grpc::Status::CANCELLED);
      } else {
        wait = NextLocked();
      }
    }
    if (wait) service_.Wait(this);
  }

  void OnCancel() override {
    HappensAfter(this);
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    if (waiting_) FinishLocked(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    HappensAfter(this);
    service_.Forget(this);
    delete this;
  }

 protected:
  enum class Next { kSend, kWait, kEnd };
  // Fills `out` and answers kSend, or answers kWait (nothing new yet) or kEnd (finish OK).
  // Called with the stream's lock held.
  virtual Next Produce(Message& out) = 0;
  JobsService& service_;

 private:
  // Sends the next message, or finishes; true when it must wait for more.
  bool NextLocked() {
    if (finished_) return false;
    if (cancelled_) {
      FinishLocked(grpc::Status::CANCELLED);
      return false;
    }
    switch (Produce(message_)) {
      case Next::kSend:
        HappensBefore(this);
        this->StartWrite(&message_);
        return false;
      case Next::kEnd:
        FinishLocked(grpc::Status::OK);
        return false;
      case Next::kWait:
        break;
    }
    waiting_ = true;
    return true;
  }

  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    waiting_ = false;
    HappensBefore(this);
    this->Finish(status);
  }

  std::mutex mu_;
  Message message_;
  bool waiting_ = false, cancelled_ = false, finished_ = false;
};

// Sends a job's log from an offset in chunks; when following, waits for more until the job
// has ended and everything it wrote was sent.
class LogStream final : public FollowStream<v1::LogChunk> {
 public:
  LogStream(JobsService& service, std::string job_id, std::string path, uint64_t offset, bool follow)
      : FollowStream(service), job_id_(std::move(job_id)), path_(std::move(path)), offset_(offset), follow_(follow) {}

 private:
  Next Produce(v1::LogChunk& chunk) override {
    // Whether the job ended is read before the file, so its last words are never missed.
    auto job = service_.jobs_.Get(job_id_);
    bool ended = !job || v1::JobEnded(job->state());
    std::ifstream in(path_, std::ios::binary);
    std::string data(64 * 1024, '\0');
    size_t n = 0;
    if (in && in.seekg(static_cast<std::streamoff>(offset_))) {
      in.read(data.data(), static_cast<std::streamsize>(data.size()));
      n = static_cast<size_t>(in.gcount());
    }
    if (n > 0) {
      data.resize(n);
      chunk.set_offset(offset_);
      chunk.set_data(std::move(data));
      offset_ += n;
      return Next::kSend;
    }
    return !follow_ || ended ? Next::kEnd : Next::kWait;
  }

  std::string job_id_, path_;
  uint64_t offset_;
  bool follow_;
};

// Sends a job each time it differs from what was sent last, until its final state was sent.
class JobStream final : public FollowStream<v1::Job> {
 public:
  JobStream(JobsService& service, std::string job_id) : FollowStream(service), job_id_(std::move(job_id)) {}

 private:
  Next Produce(v1::Job& out) override {
    if (ended_) return Next::kEnd;
    auto job = service_.jobs_.Get(job_id_);
    if (!job) return Next::kEnd;  // jobs are never forgotten while the monitor runs
    std::string now = job->SerializeAsString();
    if (now == sent_) return Next::kWait;
    sent_ = std::move(now);
    ended_ = v1::JobEnded(job->state());
    out = std::move(*job);
    return Next::kSend;
  }

  std::string job_id_;
  std::string sent_;  // the last job sent, serialized
  bool ended_ = false;
};

namespace {

// Starts a new stream, or finishes it at once with `status` when the call is refused.
template <typename Stream>
Stream* StartOrRefuse(Stream* stream, const grpc::Status& status) {
  HappensBefore(stream);  // its construction, for the reactions gRPC runs on other threads
  if (!status.ok()) {
    stream->Finish(status);
  } else {
    stream->Start();
  }
  return stream;
}

}  // namespace

grpc::ServerUnaryReactor* JobsService::Launch(grpc::CallbackServerContext* ctx, const v1::LaunchRequest* req,
                                              v1::Job* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kOperator); !denied.ok()) return Done(ctx, denied);
  try {
    *resp = jobs_.Launch(req->config_json(), req->run_id(),
                         [this](const std::string& id) { return hub_.GetRun(id).has_value(); });
  } catch (const std::exception& e) {
    return Done(ctx, StatusOf(e));
  }
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest*,
                                                v1::ListJobsResponse* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kViewer); !denied.ok()) return Done(ctx, denied);
  for (auto& job : jobs_.List()) *resp->add_jobs() = std::move(job);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                              v1::Job* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kViewer); !denied.ok()) return Done(ctx, denied);
  auto job = jobs_.Get(req->job_id());
  if (!job) return Done(ctx, {grpc::StatusCode::NOT_FOUND, "no job " + req->job_id() + "; `gradwatch jobs` lists them"});
  *resp = std::move(*job);
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerUnaryReactor* JobsService::StopJob(grpc::CallbackServerContext* ctx, const v1::StopJobRequest* req,
                                               v1::Job* resp) {
  if (grpc::Status denied = auth_.Check(*ctx, Role::kOperator); !denied.ok()) return Done(ctx, denied);
  try {
    *resp = jobs_.Stop(req->job_id(), req->grace_ms());
  } catch (const std::exception& e) {
    return Done(ctx, StatusOf(e));
  }
  return Done(ctx, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::LogChunk>* JobsService::Logs(grpc::CallbackServerContext* ctx,
                                                          const v1::LogsRequest* req) {
  std::string path;
  grpc::Status status = auth_.Check(*ctx, Role::kViewer);
  if (status.ok()) {
    try {
      path = jobs_.LogPath(req->job_id());
    } catch (const std::exception& e) {
      status = StatusOf(e);
    }
  }
  return StartOrRefuse(new LogStream(*this, req->job_id(), path, req->offset(), req->follow()), status);
}

grpc::ServerWriteReactor<v1::Job>* JobsService::WatchJob(grpc::CallbackServerContext* ctx,
                                                        const v1::GetJobRequest* req) {
  grpc::Status status = auth_.Check(*ctx, Role::kViewer);
  if (status.ok() && !jobs_.Get(req->job_id())) {
    status = {grpc::StatusCode::NOT_FOUND, "no job " + req->job_id() + "; `gradwatch jobs` lists them"};
  }
  return StartOrRefuse(new JobStream(*this, req->job_id()), status);
}

void JobsService::Wait(Waiter* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  waiting_.insert(stream);
}

void JobsService::Forget(Waiter* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  waiting_.erase(stream);
}

void JobsService::Tick() {
  std::lock_guard<std::mutex> lock(mu_);
  std::set<Waiter*> woken;
  woken.swap(waiting_);
  // OnDone (Forget) waits on mu_, so no stream is deleted meanwhile.
  for (Waiter* s : woken) {
    if (s->Wake()) waiting_.insert(s);
  }
}

}  // namespace gradwatch::monitor
