// gradwatch-train: U-Net segmentation training, monitored by gradwatchd.
// Flags override the JSON config file; the result is validated as a whole and every
// problem is reported by field name before anything runs.
#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "gradwatch/common/file.h"
#include "gradwatch/common/version.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

using gradwatch::train::TrainConfig;

// The path given to --config, found before the full parse so that the file is loaded first
// and every other flag lands on top of it. "" when not given.
std::string ConfigPathOf(int argc, char** argv) {
  CLI::App first;
  first.allow_extras();
  first.set_help_flag();
  std::string path;
  first.add_option("--config", path);
  try {
    first.parse(argc, argv);
  } catch (const CLI::ParseError&) {
    // The full parse below reports it.
  }
  return path;
}

// Binds every flag directly onto `config`: a flag that is given overwrites the file's value,
// one that is not leaves it. A new config field needs one line here.
void AddTrainFlags(CLI::App& app, TrainConfig& config) {
  app.add_option("--run-id", config.run_id, "run id ([A-Za-z0-9._-], default: generated)");
  app.add_option("--monitor", config.monitor, "gradwatchd address host:port")->capture_default_str();
  app.add_flag("--no-monitor", config.no_monitor, "train without a monitor");
  app.add_option("--mode", config.mode, "observe | guard | gated")->capture_default_str();
  app.add_option("--scenario", config.scenario, "seed: the case's gradient explosion at mid-run");
  app.add_option("--summary-json", config.summary_json, "write a run summary here at the end");
  app.add_option("--spool", config.spool,
                 "keep reports the monitor did not get in this file (deliver: gradwatch replay FILE)");
  app.add_option("--trace-csv", config.trace_csv, "write every step here as gradwatch CSV (for replay)");
  app.add_option("--steps", config.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", config.batch, "batch size")->capture_default_str();
  app.add_option("--lr", config.lr, "learning rate")->capture_default_str();
  app.add_option("--optimizer", config.optimizer, "sgd | adam")->capture_default_str();
  app.add_option("--seed", config.seed, "seed for init, data and batch order")->capture_default_str();
  app.add_option("--device", config.device, "auto | cpu | cuda")->capture_default_str();
  app.add_option("--threads", config.threads, "torch threads")->capture_default_str();
  app.add_option_function<double>(
      "--clip-norm",
      [&config](double threshold) {
        config.clip.kind = "norm";
        config.clip.threshold = threshold;
      },
      "clip the global gradient norm from the start");
  app.add_option("--data-dir", config.data.dir, "real data: images/*.npy and masks/*.npy");
  app.add_option("--eval-every", config.eval_every, "validation every N steps")->capture_default_str();
  app.add_option("--log-every", config.log_every, "a progress line every N steps")->capture_default_str();
  app.add_option("--checkpoint-every", config.checkpoint_every, "rollback checkpoint every N steps")
      ->capture_default_str();
  app.add_option("--checkpoint-dir", config.checkpoint_dir, "also write checkpoints here");
  app.add_option("--gate-timeout-ms", config.gate_timeout_ms, "gated mode: verdict deadline")->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "gradwatch-train — U-Net segmentation on 6-channel images with the Jaccard loss, streaming\n"
      "every step to gradwatchd. `--scenario seed` reproduces the run that exploded and collapsed.\n"
      "Flags override --config (defaults shown are the config's); see `--print-config` for every field."};
  app.set_version_flag("--version", std::string("gradwatch-train ") + gradwatch::Version());
  std::string config_path = ConfigPathOf(argc, argv);
  TrainConfig config;
  std::string config_error;  // reported after the parse, so that --help still answers
  try {
    if (!config_path.empty()) config = gradwatch::train::ParseConfigJson(gradwatch::ReadFileOrThrow(config_path), config_path);
  } catch (const std::exception& e) {
    config_error = e.what();
  }
  app.add_option("--config", config_path, "JSON config file (read first; other flags override its fields)");
  bool print_config = false;
  app.add_flag("--print-config", print_config, "print the effective config as JSON and exit");
  AddTrainFlags(app, config);
  CLI11_PARSE(app, argc, argv);
  if (!config_error.empty()) {
    std::cerr << "gradwatch-train: " << config_error << "\n";
    return 2;
  }

  auto problems = gradwatch::train::Validate(config);
  if (!problems.empty()) {
    std::cerr << "gradwatch-train: invalid configuration:\n";
    for (const auto& p : problems) std::cerr << "  " << p << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << gradwatch::train::ToJson(config) << "\n";
    return 0;
  }
  // SIGTERM and SIGINT end training at the next step boundary, with everything delivered
  // (a launched job's graceful stop); the exit code is then 128 + the signal. Blocked
  // here, before torch starts any thread, and taken by one waiting thread.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  auto interrupt = std::make_shared<std::atomic<int>>(0);
  std::thread([stop_signals, interrupt] {
    int sig = 0;
    if (sigwait(&stop_signals, &sig) == 0) *interrupt = sig;
  }).detach();
  try {
    auto summary = gradwatch::train::Train(config, interrupt.get());
    std::string json = gradwatch::train::SummaryJson(summary);
    // Replaced atomically and fsynced: the monitor reads a summary as proof of success.
    if (!config.summary_json.empty()) gradwatch::WriteFileAtomically(config.summary_json, json + "\n");
    std::cerr << "gradwatch-train: done: " << summary.steps_run << " steps in " << summary.seconds
              << " s, final train loss " << summary.final_train_loss << ", val Jaccard (hard) "
              << summary.val_jaccard_hard << (summary.collapsed ? " — COLLAPSED" : "") << "\n";
    return summary.stopped_by_signal ? 128 + summary.stopped_by_signal : 0;
  } catch (const std::exception& e) {
    std::cerr << "gradwatch-train: " << e.what() << "\n";
    return 1;
  }
}
