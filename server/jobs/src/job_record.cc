#include "job_record.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>
#include <type_traits>

namespace gradwatch::jobs {
namespace {

using nlohmann::json;

// Reads `key` of `doc` into `out` when present; false (with `error`) for a wrong type.
template <typename T>
bool Field(const json& doc, const char* key, T* out, std::string* error) {
  auto it = doc.find(key);
  if (it == doc.end()) return true;
  bool ok;
  if constexpr (std::is_same_v<T, std::string>) {
    ok = it->is_string();
  } else if constexpr (std::is_same_v<T, bool>) {
    ok = it->is_boolean();
  } else {
    ok = it->is_number_integer();
  }
  if (!ok) {
    *error = std::string(key) + ": not a " + (std::is_same_v<T, std::string> ? "string"
                                              : std::is_same_v<T, bool>      ? "boolean"
                                                                             : "whole number");
    return false;
  }
  *out = it->get<T>();
  return true;
}

// The length of the valid UTF-8 character at text[i] that is no control character (but tab
// and newline); 0 when there is none.
size_t PrintableLength(const std::string& text, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return (c >= 0x20 && c != 0x7f) || c == '\t' || c == '\n' ? 1 : 0;
  size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (len == 0 || i + len > text.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
  }
  // Overlong forms, surrogates, and past U+10FFFF.
  if ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) > 0x9f) || (c == 0xf0 && b(1) < 0x90) ||
      (c == 0xf4 && b(1) > 0x8f)) {
    return 0;
  }
  return len;
}

}  // namespace

std::string Clean(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t len = PrintableLength(text, i);
    out += len ? text.substr(i, len) : "?";
    i += len ? len : 1;
  }
  return out;
}

std::string RecordToJson(const JobRecord& record) {
  std::string job_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(record.job, &job_json, opts);
  json doc = {{"job", json::parse(job_json)},
              {"token", record.token},
              {"process", record.process},
              {"stop_requested", record.stop_requested},
              {"kill_at_ms", record.kill_at_ms}};
  return doc.dump(2) + "\n";
}

std::optional<JobRecord> ParseRecord(const std::string& text, std::string* error) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {
    *error = std::string("not JSON: ") + e.what();
    return std::nullopt;
  }
  if (!doc.is_object() || !doc.contains("job") || !doc["job"].is_object()) {
    *error = "no \"job\" object";
    return std::nullopt;
  }
  JobRecord r;
  auto status = google::protobuf::util::JsonStringToMessage(doc["job"].dump(), &r.job);
  if (!status.ok()) {
    *error = "job: " + std::string(status.message());
    return std::nullopt;
  }
  if (!Field(doc, "token", &r.token, error) || !Field(doc, "process", &r.process, error) ||
      !Field(doc, "stop_requested", &r.stop_requested, error) || !Field(doc, "kill_at_ms", &r.kill_at_ms, error)) {
    return std::nullopt;
  }
  return r;
}

}  // namespace gradwatch::jobs
