// A job's record, job.json: what a restarted monitor needs to pick the job up again. Read
// back without trusting it: a record that does not parse is reported, never thrown.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "gradwatch/v1/jobs.pb.h"

namespace gradwatch::jobs {

struct JobRecord {
  v1::Job job;
  std::string token;    // the job's reporter token, "" when tokens are off
  std::string process;  // Launcher identity of the process, while it runs
  bool stop_requested = false;
  int64_t kill_at_ms = 0;
};

std::string RecordToJson(const JobRecord& record);

// The record in `text`, or nullopt with `error` saying what is wrong ("not JSON: ...",
// "job: ...", "token: expected a string"). Never throws (but std::bad_alloc).
std::optional<JobRecord> ParseRecord(const std::string& text, std::string* error);

// `text` as valid UTF-8 without control characters but tab and newline, anything else as
// '?': for text a job's error or config takes from files (its log, a broken record), which
// travels in proto3 strings and ends up on terminals.
std::string Clean(const std::string& text);

}  // namespace gradwatch::jobs
