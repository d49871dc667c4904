// RunCli: the global flags, the verbs (one file per verb or family, see verbs.h), parsing
// with usage errors as exit code 2, and running the verb given.
#include "gradwatch/cli/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "gradwatch/common/printable.h"
#include "gradwatch/common/version.h"
#include "gradwatch/common/suggest.h"
#include "verbs.h"

namespace gradwatch::cli {
namespace {

void AddGlobalFlags(CLI::App& app, Globals& g) {
  app.set_version_flag("--version", std::string("gradwatch ") + Version());
  app.require_subcommand(1);
  app.fallthrough();  // global flags may also follow the verb: gradwatch runs --json
  app.add_option("--server", g.server, "gradwatchd address (env GRADWATCH_SERVER)")->capture_default_str();
  app.add_option("--token", g.token, "access token (env GRADWATCH_TOKEN)");
  app.add_flag("--json", g.json_output, "machine-readable output, one JSON object per line");
  app.add_option("--timeout-ms", g.timeout_ms, "deadline for each call")->capture_default_str();
  app.add_option("--tls-ca", g.tls.ca, "trust this PEM CA: the monitor uses TLS (env GRADWATCH_TLS_CA)");
  app.add_option("--tls-cert", g.tls.cert, "client certificate, when the monitor asks for one (env GRADWATCH_TLS_CERT)");
  app.add_option("--tls-key", g.tls.key, "the client certificate's key (env GRADWATCH_TLS_KEY)");
}

// The names of `app`'s named subcommands.
std::vector<std::string> VerbNames(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App* s) { return !s->get_name().empty(); })) {
    names.push_back(sub->get_name());
  }
  return names;
}

// "--name" and "-n" of every flag of `app` and its option groups.
void AddFlagNames(const CLI::App& app, std::vector<std::string>& names) {
  for (const CLI::Option* opt : app.get_options()) {
    for (const auto& l : opt->get_lnames()) names.push_back("--" + l);
    for (const auto& s : opt->get_snames()) names.push_back("-" + s);
  }
  for (const CLI::App* group : app.get_subcommands([](const CLI::App* s) { return s->get_name().empty(); })) {
    AddFlagNames(*group, names);
  }
}

// The first unknown verb or flag in `args`, as a sentence with a did-you-mean; "" when
// every verb and flag is known (the error is of another kind).
std::string Misspelt(CLI::App& app, const std::vector<std::string>& args) {
  CLI::App* verb = nullptr;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") break;
    if (arg.size() > 1 && arg[0] == '-') {
      std::string name = arg.substr(0, arg.find('='));
      CLI::Option* opt = verb ? verb->get_option_no_throw(name) : nullptr;
      if (!opt) opt = app.get_option_no_throw(name);
      if (!opt) {
        std::vector<std::string> known;
        AddFlagNames(app, known);
        if (verb) AddFlagNames(*verb, known);
        return "unknown flag \"" + name + "\"" + (verb ? " for " + verb->get_name() : "") + DidYouMean(name, known);
      }
      if (opt->get_type_size_max() > 0 && name.size() == arg.size()) ++i;  // its value
    } else if (!verb) {
      auto verbs = VerbNames(app);
      if (std::find(verbs.begin(), verbs.end(), arg) == verbs.end()) {
        return "unknown verb \"" + arg + "\"" + DidYouMean(arg, verbs);
      }
      verb = app.get_subcommand(arg);
    }
  }
  return "";
}

// --help and --version print and succeed; any other parse error is a usage error: exit
// code 2, "gradwatch: " and the reason on stderr.
int ParseFailed(CLI::App& app, const CLI::ParseError& e, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err) {
  if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e, out, err);
  std::string misspelt = Misspelt(app, args);
  err << "gradwatch: " << (misspelt.empty() ? std::string(e.what()) : misspelt) << "\n"
      << "Run with --help for more information.\n";
  return 2;
}

}  // namespace

int RunCli(int argc, char** argv, std::ostream& raw_out, std::ostream& raw_err) {
  // Text from the monitor (run ids, layer names, messages, job logs) reaches a terminal:
  // control bytes are shown escaped, never interpreted.
  PrintableStream out(raw_out), err(raw_err);
  Globals g;
  g.view_out = &raw_out;
  g.view_out_tty = &raw_out == &std::cout && ::isatty(STDOUT_FILENO);
  g.view_err = &raw_err;
  g.view_err_tty = &raw_err == &std::cerr && ::isatty(STDERR_FILENO);
  if (const char* s = std::getenv("GRADWATCH_SERVER")) g.server = s;
  if (const char* t = std::getenv("GRADWATCH_TOKEN")) g.token = t;
  g.tls = reporter::TlsFromEnv();

  CLI::App app{"gradwatch — watch and steer training runs monitored by gradwatchd"};
  AddGlobalFlags(app, g);
  Verbs verbs(app);
  AddRunVerbs(verbs);
  AddWatchVerb(verbs);
  AddCommandVerbs(verbs);
  AddJobVerbs(verbs);
  AddReplayVerb(verbs);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return ParseFailed(app, e, std::vector<std::string>(argv + std::min(argc, 1), argv + argc), out, err);
  }

  std::unique_ptr<Printer> printer = MakePrinter(g.json_output, out);
  Context ctx(g, *printer, out, err);
  const Action* action = verbs.Parsed();  // one, as require_subcommand(1) holds
  if (!action) return 2;
  try {
    return (*action)(ctx);
  } catch (const Failure& f) {
    err << "gradwatch: " << f.message << "\n";
    return 1;
  }
}

}  // namespace gradwatch::cli
