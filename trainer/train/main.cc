// gradwatch-train: U-Net segmentation training, monitored by gradwatchd.
// Flags override the JSON config file; the result is validated as a whole and every
// problem is reported by field name before anything runs.
#include <CLI/CLI.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <sstream>
#include <memory>
#include <thread>

#include "gradwatch/common/log_line.h"
#include "gradwatch/common/file.h"
#include "gradwatch/common/version.h"
#include "gradwatch/torch/dist_env.h"
#include "train/config.h"
#include "train/ranks.h"
#include "train/trainer.h"

namespace {

using gradwatch::LogLine;
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
  app.add_option("--batch", config.batch, "items per step (data parallel: the global batch, split over the ranks)")->capture_default_str();
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
  app.add_option_function<std::vector<std::string>>(
      "--threshold",
      [&config](const std::vector<std::string>& items) {
        for (const auto& item : items) {  // on top of the config file's overrides
          try {
            auto [name, value] = gradwatch::train::ParseThresholdFlag(item);
            config.thresholds[name] = value;
          } catch (const std::invalid_argument& e) {
            throw CLI::ValidationError(e.what());
          }
        }
      },
      "a detector override for this run, NAME=NUMBER (repeatable; adds to the config's \"thresholds\"), "
      "e.g. spike_z_critical=7 or scalar_min.output_mean=0.05 (the names, defaults and sources: server/detect/include/gradwatch/detect/thresholds.h)");
  app.add_option_function<std::vector<std::string>>(
      "--fault",
      [&config](const std::vector<std::string>& specs) {
        config.faults.clear();  // the flags replace the config file's faults
        for (const auto& spec : specs) {
          try {
            config.faults.push_back(gradwatch::train::ParseFaultFlag(spec));
          } catch (const std::invalid_argument& e) {
            throw CLI::ValidationError(e.what());
          }
        }
      },
      "inject a fault (repeatable; replaces the config's faults): KIND@STEP[,factor=F][,rank=R]"
      "[,seconds=S][,count=N]; KIND grad_spike | lr_spike | lr_ramp | grad_ascent | nan | stall | hang; "
      "STEP 0-based; rank: that rank only (default every rank); stall: sleep S seconds on each of N "
      "steps; hang: never reach the step's collectives, until killed. E.g. stall@10,rank=1,seconds=2");
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
  int nproc = 0;
  app.add_option("--nproc", nproc,
                 "data parallel on this host: start N rank processes (torchrun's variables set, a free "
                 "port on 127.0.0.1); --batch is the global batch, split evenly. Started by torchrun or "
                 "Slurm as several processes (RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS), each "
                 "process is one rank: leave it out")
      ->check(CLI::Range(1, 1024));
  double nproc_grace = 10;
  app.add_option("--nproc-grace", nproc_grace,
                 "with --nproc: seconds the ranks have to end after the job is stopped or a rank failed, "
                 "then they are killed")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
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
  gradwatch::torchmon::DistEnv dist;
  try {
    dist = gradwatch::torchmon::ReadDistEnv();
  } catch (const std::invalid_argument& e) {
    std::cerr << "gradwatch-train: data-parallel environment: " << e.what() << "\n";
    return 2;
  }
  // A launcher's environment of one process (a Slurm job of one task) may start --nproc ranks;
  // one of several ranks must not start more.
  if (nproc > 0 && dist.distributed() && nproc != dist.world_size) {
    std::cerr << "gradwatch-train: --nproc " << nproc << ", but the launcher's environment (" << dist.source
              << ") says " << dist.world_size << " ranks\n";
    return 2;
  }
  if (nproc > 1 && !dist.distributed()) {
    if (config.batch % nproc != 0) {
      std::cerr << "gradwatch-train: invalid configuration:\n  batch: " << config.batch
                << " items do not split evenly over --nproc " << nproc << " ranks\n";
      return 2;
    }
    try {
      return gradwatch::train::RunRanks(
          nproc, argv, std::chrono::milliseconds(static_cast<int64_t>(nproc_grace * 1000)));
    } catch (const std::exception& e) {
      std::cerr << "gradwatch-train: " << e.what() << "\n";
      return 1;
    }
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
  const std::string tag =
      dist.distributed() ? "gradwatch-train[rank " + std::to_string(dist.rank) + "]: " : "gradwatch-train: ";
  try {
    auto summary = gradwatch::train::Train(config, interrupt.get(), dist);
    std::string json = gradwatch::train::SummaryJson(summary);
    // Replaced atomically and fsynced: the monitor reads a summary as proof of success. Rank
    // R > 0 of a job writes summary-rankR.json beside it.
    const std::string summary_path = gradwatch::train::RankPath(config.summary_json, dist.rank);
    if (!summary_path.empty()) gradwatch::WriteFileAtomically(summary_path, json + "\n");
    LogLine(tag, "done: ", summary.steps_run, " steps in ", summary.seconds, " s, final train loss ",
        summary.final_train_loss, ", val Jaccard (hard) ", summary.val_jaccard_hard,
        summary.collapsed ? " — COLLAPSED" : "");
    return summary.stopped_by_signal ? 128 + summary.stopped_by_signal : 0;
  } catch (const std::exception& e) {
    LogLine(tag, e.what());
    return 1;
  }
}
