#include "alertmanager.h"

#include <nlohmann/json.hpp>

namespace gradwatch::monitor {
namespace {

using nlohmann::json;

// A syntax error's description ("parse error at line 1, column 7: ..."), from a second,
// exception-free pass over a body that did not parse.
std::string SyntaxError(const std::string& text) {
  struct Sax : json::json_sax_t {
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
      error = e.what();
      return false;
    }
    std::string error = "not JSON";
  } sax;
  json::sax_parse(text, &sax);
  auto tag = sax.error.find("] ");  // drop "[json.exception.parse_error.101] "
  return tag == std::string::npos ? sax.error : sax.error.substr(tag + 2);
}

// obj[key] into `out` when a string; left as is when absent or null; otherwise sets the
// first error.
void Text(const json& obj, const char* key, const std::string& where, std::string* out, std::string* error) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return;
  if (it->is_string()) {
    *out = it->get_ref<const std::string&>();
  } else if (error->empty()) {
    *error = where + "." + key + " must be a string, got " + it->type_name();
  }
}

// obj[key] when an object; an empty object when absent or null; otherwise sets the first error.
const json& Object(const json& obj, const char* key, const std::string& where, std::string* error) {
  static const json kEmpty = json::object();
  auto it = obj.find(key);
  if (it != obj.end() && it->is_object()) return *it;
  if (it != obj.end() && !it->is_null() && error->empty()) {
    *error = where + "." + key + " must be an object, got " + it->type_name();
  }
  return kEmpty;
}

// One alert; "" or what is wrong with it, named by `where` ("alerts[2]").
std::string ParseAlert(const json& a, const std::string& where, Alert* out) {
  if (!a.is_object()) return where + " must be an object, got " + a.type_name();
  std::string error;
  const json& labels = Object(a, "labels", where, &error);
  const json& notes = Object(a, "annotations", where, &error);
  Text(labels, "run_id", where + ".labels", &out->run_id, &error);
  Text(labels, "alertname", where + ".labels", &out->alertname, &error);
  Text(labels, "severity", where + ".labels", &out->severity, &error);
  Text(a, "status", where, &out->status, &error);
  Text(notes, "description", where + ".annotations", &out->summary, &error);
  Text(notes, "summary", where + ".annotations", &out->summary, &error);
  return error;
}

}  // namespace

std::string ParseAlertmanagerPayload(const std::string& body, std::vector<Alert>* alerts) {
  const std::string expected = "; expected an Alertmanager webhook payload: a JSON object with an \"alerts\" array";
  json payload = json::parse(body, nullptr, false);
  if (payload.is_discarded()) return "webhook body is not JSON (" + SyntaxError(body) + ")" + expected;
  if (!payload.is_object()) return std::string("webhook body is a JSON ") + payload.type_name() + expected;
  auto list = payload.find("alerts");
  if (list == payload.end()) return "webhook body has no \"alerts\"" + expected;
  if (!list->is_array()) return std::string("webhook body's \"alerts\" is a ") + list->type_name() + expected;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string error = ParseAlert((*list)[i], "alerts[" + std::to_string(i) + "]", &alerts->emplace_back());
    if (!error.empty()) return "webhook body: " + error;
  }
  return "";
}

}  // namespace gradwatch::monitor
