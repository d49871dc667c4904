#include "launch_config.h"

#include "client.h"
#include "gradwatch/common/file.h"
#include "gradwatch/jobs/launch_config.h"
#include "gradwatch/common/suggest.h"
#include "train/config.h"

namespace gradwatch::cli {
namespace {

using nlohmann::json;

// Every field a launch config may hold: gradwatch-train's complete config, with one fault
// for the fields of a fault, and the scheduler's "resources".
const json& KnownFields() {
  static const json known = [] {
    train::TrainConfig config;
    config.faults.emplace_back();
    json fields = json::parse(train::ToJson(config));
    for (const auto& limit : jobs::kResourceLimits) fields["resources"][limit.field] = limit.fallback;
    return fields;
  }();
  return known;
}

// Fields the launcher sets itself.
const char* LauncherField(const std::string& path) {
  if (path == "monitor" || path == "no_monitor") return "a launched job reports to this monitor; leave it out";
  if (path == "summary_json") return "set by the launcher; leave it out";
  return nullptr;
}

// "; did you mean \"model.depth\"?" for the key "dept" under "model.".
std::string Suggestion(const std::string& key, const json& known, const std::string& prefix) {
  std::vector<std::string> names;
  for (const auto& [name, value] : known.items()) names.push_back(name);
  std::string best = ClosestName(key, names);
  return best.empty() ? "" : "; did you mean \"" + prefix + best + "\"?";
}

// Walks `config` against `known` (objects, and the arrays of objects in "faults").
void Check(const json& config, const json& known, const std::string& prefix, std::vector<std::string>& problems) {
  for (const auto& [key, value] : config.items()) {
    std::string path = prefix + key;
    if (const char* why = prefix.empty() ? LauncherField(path) : nullptr) {
      problems.push_back(path + ": " + why);
    } else if (!known.contains(key)) {
      problems.push_back(path + ": unknown field" + Suggestion(key, known, prefix));
    } else if (value.is_object() && known[key].is_object()) {
      Check(value, known[key], path + ".", problems);
    } else if (value.is_array() && known[key].is_array() && !known[key].empty()) {
      for (size_t i = 0; i < value.size(); ++i) {
        if (value[i].is_object()) Check(value[i], known[key][0], path + "[" + std::to_string(i) + "].", problems);
      }
    }
  }
}

// "line 3, column 5: syntax error while parsing ..." from nlohmann's parse error.
std::string SyntaxError(const json::parse_error& e) {
  std::string what = e.what();
  auto at = what.find("parse error at ");
  if (at != std::string::npos) return what.substr(at + 15);
  auto bracket = what.find("] ");
  return bracket == std::string::npos ? what : what.substr(bracket + 2);
}

json ReadConfigFile(const std::string& file) {
  std::string text;
  if (!ReadWholeFile(file, &text)) throw Failure{"launch: cannot read " + file};
  json config;
  try {
    config = json::parse(text, nullptr, true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    throw Failure{"launch: " + file + ": JSON syntax error at " + SyntaxError(e)};
  }
  if (!config.is_object()) {
    throw Failure{"launch: " + file + ": a config is a JSON object ({...}); this file holds a JSON " +
                  config.type_name()};
  }
  return config;
}

// Sets config[a][b]... = value for the --set path "a.b".
void SetField(json& config, const std::string& path, json value) {
  json* at = &config;
  for (size_t from = 0;;) {
    size_t dot = path.find('.', from);
    std::string key = path.substr(from, dot == std::string::npos ? std::string::npos : dot - from);
    if (dot == std::string::npos) {
      (*at)[key] = std::move(value);
      return;
    }
    if (!(*at)[key].is_object()) (*at)[key] = json::object();
    at = &(*at)[key];
    from = dot + 1;
  }
}

}  // namespace

std::vector<std::string> LaunchConfigProblems(const json& config) {
  std::vector<std::string> problems;
  Check(config, KnownFields(), "", problems);
  return problems;
}

std::string LaunchConfigJson(const LaunchOptions& o) {
  json config = o.config_file.empty() ? json::object() : ReadConfigFile(o.config_file);
  for (const auto& item : o.sets) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) throw Failure{"launch: --set " + item + ": expected FIELD=VALUE"};
    std::string text = item.substr(eq + 1);
    json value = json::parse(text, nullptr, false);
    if (value.is_discarded()) value = text;  // a bare word: a string
    SetField(config, item.substr(0, eq), std::move(value));
  }
  auto problems = LaunchConfigProblems(config);
  if (!problems.empty()) {
    std::string message = "launch: " + (o.config_file.empty() ? std::string("the config") : o.config_file) +
                          " has " + std::to_string(problems.size()) +
                          (problems.size() == 1 ? " field" : " fields") + " a launch cannot take:";
    for (const auto& p : problems) message += "\n  " + p;
    throw Failure{message};
  }
  return config.dump();
}

}  // namespace gradwatch::cli
