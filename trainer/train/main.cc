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

std::string ReadFile(const std::string& path) { return gradwatch::ReadFileOrThrow(path); }

}  // namespace

int main(int argc, char** argv) {
  using gradwatch::train::TrainConfig;
  CLI::App app{
      "gradwatch-train — U-Net segmentation on 6-channel images with the Jaccard loss, streaming\n"
      "every step to gradwatchd. `--scenario seed` reproduces the run that exploded and collapsed.\n"
      "Flags override --config; see `--print-config` for every field and its default."};
  app.set_version_flag("--version", std::string("gradwatch-train ") + gradwatch::Version());
  std::string config_path;
  app.add_option("--config", config_path, "JSON config file")->check(CLI::ExistingFile);
  bool print_config = false;
  app.add_flag("--print-config", print_config, "print the effective config as JSON and exit");

  // Flag values land in `flags` and are copied over the file's config only when given.
  TrainConfig flags;
  double clip_norm = 0;
  auto* o_run = app.add_option("--run-id", flags.run_id, "run id ([A-Za-z0-9._-], default: generated)");
  auto* o_monitor = app.add_option("--monitor", flags.monitor, "gradwatchd address host:port (default 127.0.0.1:7070)");
  auto* o_nomon = app.add_flag("--no-monitor", flags.no_monitor, "train without a monitor");
  auto* o_mode = app.add_option("--mode", flags.mode, "observe | guard | gated (default guard)");
  auto* o_scn = app.add_option("--scenario", flags.scenario, "seed: the case's gradient explosion at mid-run");
  auto* o_sum = app.add_option("--summary-json", flags.summary_json, "write a run summary here at the end");
  auto* o_spool = app.add_option("--spool", flags.spool,
                                 "keep reports the monitor did not get in this file (deliver: gradwatch replay FILE)");
  auto* o_trace = app.add_option("--trace-csv", flags.trace_csv, "write every step here as gradwatch CSV (for replay)");
  auto* o_steps = app.add_option("--steps", flags.steps, "optimizer steps (default 600)");
  auto* o_batch = app.add_option("--batch", flags.batch, "batch size (default 4)");
  auto* o_lr = app.add_option("--lr", flags.lr, "learning rate (default 0.01)");
  auto* o_opt = app.add_option("--optimizer", flags.optimizer, "sgd | adam (default sgd)");
  auto* o_seed = app.add_option("--seed", flags.seed, "seed for init, data and batch order (default 7)");
  auto* o_dev = app.add_option("--device", flags.device, "auto | cpu | cuda (default auto)");
  auto* o_thr = app.add_option("--threads", flags.threads, "torch threads (default 1)");
  auto* o_clip = app.add_option("--clip-norm", clip_norm, "clip the global gradient norm from the start");
  auto* o_data = app.add_option("--data-dir", flags.data.dir, "real data: images/*.npy and masks/*.npy");
  auto* o_eval = app.add_option("--eval-every", flags.eval_every, "validation every N steps (default 50)");
  auto* o_log = app.add_option("--log-every", flags.log_every, "a progress line every N steps (default 25)");
  auto* o_ck = app.add_option("--checkpoint-every", flags.checkpoint_every, "rollback checkpoint every N steps (default 50)");
  auto* o_ckd = app.add_option("--checkpoint-dir", flags.checkpoint_dir, "also write checkpoints here");
  auto* o_gate = app.add_option("--gate-timeout-ms", flags.gate_timeout_ms, "gated mode: verdict deadline (default 200)");
  CLI11_PARSE(app, argc, argv);

  TrainConfig config;
  try {
    if (!config_path.empty()) config = gradwatch::train::ParseConfigJson(ReadFile(config_path), config_path);
  } catch (const std::exception& e) {
    std::cerr << "gradwatch-train: " << e.what() << "\n";
    return 2;
  }
  auto given = [](CLI::Option* o) { return o->count() > 0; };
  if (given(o_run)) config.run_id = flags.run_id;
  if (given(o_monitor)) config.monitor = flags.monitor;
  if (given(o_nomon)) config.no_monitor = flags.no_monitor;
  if (given(o_mode)) config.mode = flags.mode;
  if (given(o_scn)) config.scenario = flags.scenario;
  if (given(o_sum)) config.summary_json = flags.summary_json;
  if (given(o_trace)) config.trace_csv = flags.trace_csv;
  if (given(o_spool)) config.spool = flags.spool;
  if (given(o_steps)) config.steps = flags.steps;
  if (given(o_batch)) config.batch = flags.batch;
  if (given(o_lr)) config.lr = flags.lr;
  if (given(o_opt)) config.optimizer = flags.optimizer;
  if (given(o_seed)) config.seed = flags.seed;
  if (given(o_dev)) config.device = flags.device;
  if (given(o_thr)) config.threads = flags.threads;
  if (given(o_clip)) {
    config.clip.kind = "norm";
    config.clip.threshold = clip_norm;
  }
  if (given(o_data)) config.data.dir = flags.data.dir;
  if (given(o_eval)) config.eval_every = flags.eval_every;
  if (given(o_log)) config.log_every = flags.log_every;
  if (given(o_ck)) config.checkpoint_every = flags.checkpoint_every;
  if (given(o_ckd)) config.checkpoint_dir = flags.checkpoint_dir;
  if (given(o_gate)) config.gate_timeout_ms = flags.gate_timeout_ms;

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
