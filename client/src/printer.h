// How `gradwatch` prints what it fetched: a Printer per invocation, text for people
// (tables, aligned fields, one line per record) or one JSON object per line (--json), as
// google/benchmark's ConsoleReporter and JSONReporter. A verb hands each record to the
// printer once; MakePrinter chooses the format, in one place. The records are protobuf
// messages from the monitor, so a printer is tested without one.
//
// Text from a run is untrusted: RunCli gives the printer a PrintableStream, which shows
// control bytes escaped. Progress and errors are not records: verbs write them to stderr.
#pragma once

#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gradwatch/v1/jobs.pb.h"
#include "gradwatch/v1/runs.pb.h"

namespace gradwatch::cli {

template <typename T>
using Repeated = google::protobuf::RepeatedPtrField<T>;

class Printer {
 public:
  virtual ~Printer() = default;

  // `runs`: every run, in the order given (RunCli sorts newest first).
  virtual void Runs(const std::vector<v1::Run>& runs) = 0;
  // `run`: what the monitor knows of `run_id` as a run, as a launched job, or both; a
  // null pointer is a side it does not know.
  virtual void Run(const std::string& run_id, const v1::Run* run, const v1::Job* job) = 0;
  // `events`, and the events `replay` found.
  virtual void Events(const Repeated<v1::Event>& events) = 0;
  // `commands`: the audit log, with each command's effect.
  virtual void Commands(const Repeated<v1::CommandRecord>& commands) = 0;
  // A command sent (clip, lr, ..., undo). Text shows only one the trainer applied: the
  // verb explains any other on stderr.
  virtual void CommandOutcome(const v1::SendCommandResponse& response) = 0;
  // `policy`: the run's thresholds and guard policy after the change.
  virtual void Policy(const v1::Run& run) = 0;
  // `explain`: the monitor's diagnosis, plain text.
  virtual void Explanation(const std::string& run_id, const std::string& text) = 0;
  // `jobs`: every launched job.
  virtual void Jobs(const Repeated<v1::Job>& jobs) = 0;
  // `launch`: the job as submitted (text: its run id, alone on the line), and as it ended
  // when followed (text: nothing; the outcome is progress, on stderr).
  virtual void Launched(const v1::Job& job, bool detached) = 0;
  virtual void LaunchEnded(const v1::Job& job) = 0;
  // `stop` of a launched job: the job as it ended.
  virtual void JobStopped(const v1::Job& job) = 0;
  // `replay SPOOL`: a trainer's spool delivered as run `run_id`.
  virtual void SpoolDelivered(const std::string& run_id, size_t steps, size_t messages, const std::string& file) = 0;
  // `replay`: after the events, how many `unit`s ("rows", "steps") went through the
  // detectors and how many events they raised (text only: JSON lines are the events).
  virtual void ReplayTotals(size_t count, const std::string& unit, size_t events) = 0;
};

std::unique_ptr<Printer> MakeTextPrinter(std::ostream& out);  // text_printer.cc
std::unique_ptr<Printer> MakeJsonPrinter(std::ostream& out);  // json_printer.cc

// The one place the format is chosen: JSON lines with --json, else text.
inline std::unique_ptr<Printer> MakePrinter(bool json, std::ostream& out) {
  return json ? MakeJsonPrinter(out) : MakeTextPrinter(out);
}

// A job's end in words, e.g. "job j1 stopped (exit code 143) after 2.5 s: reason".
std::string JobOutcome(const v1::Job& job);
// "critical", "warning" or "info".
const char* SeverityName(v1::Severity severity);

}  // namespace gradwatch::cli
