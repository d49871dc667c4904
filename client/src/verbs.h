// The verbs of `gradwatch`, one file per verb or family of verbs: each adds its
// subcommands to the CLI::App, with their flags and the action that runs them, to a Verbs
// table; RunCli parses the command line and runs the one given.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "client.h"
#include "printer.h"

namespace gradwatch::cli {

// What a verb runs with: the global flags, the printer for its records, stdout (records)
// and stderr (progress and errors), and the connection to gradwatchd, made on first use
// (replay --offline and launch's config checks need none).
class Context {
 public:
  Context(const Globals& g, Printer& printer, std::ostream& out, std::ostream& err)
      : g(g), print(printer), out(out), err(err) {}

  const Globals& g;
  Printer& print;
  std::ostream& out;
  std::ostream& err;

  Client& client() {
    if (!client_) client_.emplace(g);
    return *client_;
  }

 private:
  std::optional<Client> client_;
};

// Runs a verb; returns the exit code. Throws Failure (exit code 1, its message on stderr).
using Action = std::function<int(Context&)>;

class Verbs {
 public:
  explicit Verbs(CLI::App& app) : app_(app) {}

  // Adds the subcommand `name`, run by `action` when it is the one given.
  CLI::App* Add(const std::string& name, const std::string& description, Action action) {
    CLI::App* sub = app_.add_subcommand(name, description);
    verbs_.emplace_back(sub, std::move(action));
    return sub;
  }

  // The action of the verb that was parsed; nullptr before parsing or when none was.
  const Action* Parsed() const {
    for (const auto& [sub, action] : verbs_) {
      if (sub->parsed()) return &action;
    }
    return nullptr;
  }

 private:
  CLI::App& app_;
  std::vector<std::pair<CLI::App*, Action>> verbs_;
};


void AddRunVerbs(Verbs& verbs);      // runs, run, events, explain, export (run_verbs.cc)
void AddCommandVerbs(Verbs& verbs);  // clip, lr, skip, rollback, stop, mode, undo, policy, commands
void AddJobVerbs(Verbs& verbs);      // launch, logs, jobs (jobs.cc; stop is a command verb)
void AddWatchVerb(Verbs& verbs);     // watch (watch.cc)
void AddReplayVerb(Verbs& verbs);    // replay (replay.cc)

}  // namespace gradwatch::cli
