// A result with a code: what went wrong and what kind of wrong, so that the RPC edge picks
// its status from the code and never from the message text. Default-constructed is OK.
#pragma once

#include <string>
#include <utility>

namespace gradwatch {

class Status {
 public:
  enum class Code {
    kOk,
    kInvalidArgument,     // the input is malformed; sending it again cannot help
    kNotFound,            // the run, job or command named does not exist
    kFailedPrecondition,  // valid input the current state refuses (e.g. a run id in use)
    kResourceExhausted,   // a limit is reached; may succeed later
  };

  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Invalid(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status Precondition(std::string m) { return {Code::kFailedPrecondition, std::move(m)}; }
  static Status Exhausted(std::string m) { return {Code::kResourceExhausted, std::move(m)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

}  // namespace gradwatch
