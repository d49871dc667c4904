// The checks on a hello's own content (see hello_check.h).
#include "hello_check.h"

#include <algorithm>
#include <tuple>

#include "gradwatch/common/run_id.h"
#include "hub_internal.h"

namespace gradwatch::monitor {
namespace {

// "" when `text` fits in `limit` bytes; else the refusal naming the field.
std::string TooLong(const std::string& field, const std::string& text, size_t limit) {
  if (text.size() <= limit) return "";
  return "hello." + field + " is " + std::to_string(text.size()) + " bytes, the limit is " + std::to_string(limit);
}

std::string CheckLayers(const v1::Hello& hello, const HubOptions& o) {
  if (static_cast<size_t>(hello.layer_names_size()) > o.max_layers) {
    return "hello.layer_names has " + std::to_string(hello.layer_names_size()) + " names, the limit is " +
           std::to_string(o.max_layers);
  }
  for (int i = 0; i < hello.layer_names_size(); ++i) {
    std::string bad = TooLong("layer_names[" + std::to_string(i) + "]", hello.layer_names(i), o.max_name_length);
    if (!bad.empty()) return bad;
  }
  return "";
}

std::string CheckText(const v1::Hello& hello, const HubOptions& o) {
  const v1::RunConfig& c = hello.config();
  for (const auto& [field, text, limit] :
       {std::tuple{"host", &hello.host(), o.max_text_length}, {"device", &hello.device(), o.max_text_length},
        {"trainer_version", &hello.trainer_version(), o.max_text_length},
        {"config.model", &c.model(), o.max_config_text_length},
        {"config.optimizer", &c.optimizer(), o.max_config_text_length},
        {"config.loss", &c.loss(), o.max_config_text_length}}) {
    std::string bad = TooLong(field, *text, limit);
    if (!bad.empty()) return bad;
  }
  if (static_cast<size_t>(c.labels_size()) > o.max_labels) {
    return "hello.config.labels has " + std::to_string(c.labels_size()) + " entries, the limit is " +
           std::to_string(o.max_labels);
  }
  for (const auto& [k, v] : c.labels()) {
    std::string bad = TooLong("config.labels key", k, o.max_config_text_length);
    if (bad.empty()) bad = TooLong("config.labels[" + k.substr(0, 64) + "]", v, o.max_config_text_length);
    if (!bad.empty()) return bad;
  }
  return "";
}

}  // namespace

Status CheckHello(const v1::Hello& hello, const HubOptions& o) {
  if (!ValidRunId(hello.run_id())) {
    return Status::Invalid("hello.run_id \"" + hello.run_id().substr(0, 64) +
                           "\" is invalid: use " + kRunIdRule);
  }
  if (hello.world_size() > o.max_world_size) {
    return Status::Invalid("hello.world_size is " + std::to_string(hello.world_size()) + ", the limit is " +
                           std::to_string(o.max_world_size) + " ranks");
  }
  if (hello.rank() >= std::max(1u, hello.world_size())) {
    return Status::Invalid("hello.rank " + std::to_string(hello.rank()) + " is not below hello.world_size " +
                           std::to_string(hello.world_size()) + " (ranks run from 0)");
  }
  std::string bad = CheckLayers(hello, o);
  if (bad.empty()) bad = CheckText(hello, o);
  if (!bad.empty()) return Status::Invalid(bad);
  Status overrides = CheckOverrides(hello.config());
  return overrides.ok() ? overrides : Status::Invalid("hello.config." + overrides.message());
}


}  // namespace gradwatch::monitor
