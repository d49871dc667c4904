// The fan-in load: data-parallel jobs whose ranks each hold a stream to the monitor and
// report every step together, as the gradient all-reduce keeps them in step. Every rank's
// report carries the step's per-layer norms (of the averaged gradient), its own loss,
// local gradient norm and compute time; rank 0's also every rank's values, gathered.
// Values are healthy, with a few percent of noise, and the loss falls slowly as a run that
// learns does (0.5 at the start, 0.46 by step 300, towards 0.25): no detector should fire.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../ingest/load.h"
#include "rank_stream.h"

namespace gradwatch::bench {

// The hello of rank `rank` of a `world`-rank job (bench/ingest's U-Net-like run).
v1::Hello RankHello(const std::string& run_id, int layers, uint32_t rank, uint32_t world, v1::Mode mode);

// One step's reports of every rank of a job, from bench/ingest's healthy StepSource with
// the loss around 0.5. Not thread-safe: one per thread.
class JobSteps {
 public:
  JobSteps(int layers, int ranks, uint32_t seed);
  // out[k] is rank k's report of `step` (out is resized to the ranks).
  void Fill(uint64_t step, std::vector<v1::StepReport>& out);

 private:
  struct RankNoise {  // multipliers, one row per step modulo kRows
    double loss, norm, compute;
  };
  static constexpr int kRows = 64;
  StepSource source_;
  int ranks_;
  std::vector<RankNoise> noise_;  // kRows x ranks
};

// One job: its ranks' streams, in rank order, and where it is.
struct Job {
  std::string run_id;
  std::vector<std::unique_ptr<RankStream>> ranks;
  uint64_t step = 0;                 // the last step reported
  SteadyClock::time_point next_due;  // when the next step is due (paced jobs)
};

// Paces `jobs` at `steps_per_s` each from one thread of its own, which only builds and
// queues reports, from each job's next_due on. A step goes out when due; a thread that
// falls behind catches up, and how late each job's step went is recorded in `lateness`.
class Driver {
 public:
  Driver(std::vector<Job*> jobs, double steps_per_s, int layers, uint32_t seed, LatencyHistogram& lateness,
         const std::string& thread_name);
  ~Driver();  // Stop()
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;
  void Stop();

 private:
  void Loop(const std::string& thread_name);
  void ReportStep(Job& job, SteadyClock::time_point due);

  std::vector<Job*> jobs_;
  SteadyClock::duration period_;
  JobSteps steps_;
  std::vector<v1::StepReport> reports_;
  LatencyHistogram& lateness_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Names the calling thread (at most 15 characters show), so that its CPU time can be told apart.
void NameThread(const std::string& name);

}  // namespace gradwatch::bench
