// TrainConfig: defaults, JSON parsing and round trip, and each validation message.
#include "train/config.h"

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace gradwatch::train {
namespace {

std::string parse_error(const std::string& json) {
  try {
    ParseConfigJson(json, "config.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TrainConfig, defaults_are_the_case_and_valid) {
  const TrainConfig c;
  EXPECT_EQ(c.optimizer, "sgd");
  EXPECT_EQ(c.lr, 0.01);
  EXPECT_EQ(c.momentum, 0.9);
  EXPECT_TRUE(c.nesterov);
  EXPECT_EQ(c.batch, 4);
  EXPECT_EQ(c.data.synthetic.channels, 6);
  EXPECT_EQ(c.mode, "guard");
  EXPECT_EQ(c.clip.kind, "off");
  EXPECT_TRUE(Validate(c).empty()) << Validate(c)[0];
}

TEST(TrainConfig, empty_object_gives_the_defaults) {
  EXPECT_EQ(ToJson(ParseConfigJson("{}", "config.json")), ToJson(TrainConfig{}));
}

TEST(TrainConfig, json_round_trip_keeps_every_field) {
  TrainConfig c;
  c.run_id = "unet-7";
  c.device = "cpu";
  c.threads = 2;
  c.seed = 18446744073709551615ull;
  c.steps = 900;
  c.batch = 8;
  c.eval_every = 10;
  c.log_every = 5;
  c.model = {4, 16};
  c.data.dir = "/data/case";
  c.data.augment = false;
  c.data.synthetic = {11, 64, 48, 3, 0.3, 0.05, 0.2};
  c.optimizer = "adam";
  c.lr = 0.003;
  c.momentum = 0.5;
  c.nesterov = false;
  c.lr_schedule = "step";
  c.lr_step_every = 100;
  c.lr_step_gamma = 0.5;
  c.lr_warmup_steps = 30;
  c.clip = {"norm", 1.0};
  c.checkpoint_every = 25;
  c.checkpoint_dir = "/tmp/ckpt";
  c.monitor = "10.0.0.2:7070";
  c.no_monitor = true;
  c.mode = "gated";
  c.gate_timeout_ms = 500;
  c.faults = {{"lr_spike", 40, 100.0}, {"nan", 50, 1.0}, {"stall", 60, 1.0, 1, 2.5, 4}};
  c.summary_json = "/tmp/summary.json";
  c.thresholds = {{"spike_z_critical", 7.5}, {"scalar_min.output_mean", 0.05}};
  const std::string json = ToJson(c);
  const TrainConfig back = ParseConfigJson(json, "round-trip");
  EXPECT_EQ(ToJson(back), json);
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.data.synthetic.noise, 0.05);
  EXPECT_EQ(back.faults.size(), 3u);
  EXPECT_EQ(back.faults[1].kind, "nan");
  EXPECT_EQ(back.faults[2].rank, 1);
  EXPECT_EQ(back.faults[2].seconds, 2.5);
  EXPECT_EQ(back.faults[2].count, 4);
  EXPECT_EQ(back.thresholds, c.thresholds);
  EXPECT_NE(json, ToJson(TrainConfig{}));
}

TEST(TrainConfig, unknown_field_is_rejected_with_its_name) {
  EXPECT_EQ(parse_error(R"({"lerning_rate": 0.1})"), R"(config.json: unknown field "lerning_rate")");
  EXPECT_EQ(parse_error(R"({"model": {"dept": 3}})"), R"(config.json: unknown field "model.dept")");
  EXPECT_EQ(parse_error(R"({"faults": [{"kind": "nan", "stp": 3}]})"),
            R"(config.json: unknown field "faults[0].stp")");
}

TEST(TrainConfig, wrong_types_are_rejected_with_field_and_type) {
  EXPECT_EQ(parse_error(R"({"lr": "fast"})"), "config.json: lr: expected a number, got string");
  EXPECT_EQ(parse_error(R"({"steps": 600.5})"), "config.json: steps: expected an integer, got number");
  EXPECT_EQ(parse_error(R"({"seed": -1})"),
            "config.json: seed: expected a non-negative integer, got number");
  EXPECT_EQ(parse_error(R"({"model": 3})"), "config.json: model: expected a JSON object, got number");
  EXPECT_EQ(parse_error(R"({"threads": 99999999999})"),
            "config.json: threads: expected an integer in range");
  EXPECT_EQ(parse_error(R"([1, 2])"), "config.json: the top level: expected a JSON object, got array");
  EXPECT_EQ(parse_error(R"({"faults": {}})"), "config.json: faults: expected an array, got object");
  EXPECT_EQ(parse_error(R"({"thresholds": [1]})"),
            "config.json: thresholds: expected an object of NAME: number, got array");
  EXPECT_EQ(parse_error(R"({"thresholds": {"loss_z": "6"}})"),
            "config.json: thresholds.loss_z: expected a number, got string");
}

TEST(TrainConfig, thresholds_are_checked_against_the_detectors_names_and_ranges) {
  TrainConfig c;
  c.thresholds = {{"spike_z_critical", 7}, {"scalar_max.data_time_ms", 50}, {"rank_lag_steps", 20}};
  EXPECT_TRUE(Validate(c).empty()) << Validate(c)[0];
  c.thresholds = {{"spike_z_critcal", 7}, {"spike_alpha", 2}, {"scalar_max.a b", 1}, {"rank_lag_steps", 0.5}};
  const std::vector<std::string> problems = Validate(c);
  ASSERT_EQ(problems.size(), 4u);  // every one at once
  EXPECT_EQ(problems[0], "thresholds: threshold 'rank_lag_steps' = 0.5 is outside [1, 1e+09]");
  EXPECT_EQ(problems[1], "thresholds: threshold 'scalar_max.a b': the scalar name is not 1 to 64 characters of "
                         "[A-Za-z0-9_.:/-]");
  EXPECT_EQ(problems[2], "thresholds: threshold 'spike_alpha' = 2 is outside [0, 1]");
  EXPECT_EQ(problems[3], "thresholds: unknown threshold 'spike_z_critcal'; did you mean \"spike_z_critical\"?");
  for (int i = 0; i <= static_cast<int>(Limits::kThresholds); ++i) c.thresholds["scalar_max.s" + std::to_string(i)] = 1;
  EXPECT_EQ(Validate(c).at(0).rfind("thresholds: must hold <= 256 overrides", 0), 0u) << Validate(c).at(0);
}

TEST(TrainConfig, threshold_flags_read_name_equals_number) {
  EXPECT_EQ(ParseThresholdFlag("loss_z=6.5"), std::make_pair(std::string("loss_z"), 6.5));
  try {
    ParseThresholdFlag("loss_z");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), R"(--threshold "loss_z": expected NAME=NUMBER, e.g. spike_z_critical=6)");
  }
}

TEST(TrainConfig, invalid_json_names_the_source) {
  EXPECT_EQ(parse_error(R"({"lr": )").rfind("config.json: invalid JSON: ", 0), 0u);
}

TEST(TrainConfig, comments_are_allowed) {
  const TrainConfig c = ParseConfigJson("{\n  // the case's fix\n  \"clip\": {\"kind\": \"norm\"}\n}", "c");
  EXPECT_EQ(c.clip.kind, "norm");
  EXPECT_EQ(c.clip.threshold, 1.0);
}

// Each mutation of a valid config must give exactly this one problem.
struct Case {
  std::function<void(TrainConfig&)> mutate;
  std::string message;
};

TEST(TrainConfig, validate_names_each_problem) {
  const std::vector<Case> cases = {
      {[](TrainConfig& c) { c.lr = -1; }, "lr: must be > 0, got -1"},
      {[](TrainConfig& c) { c.batch = 0; }, "batch: must be >= 1, got 0"},
      {[](TrainConfig& c) { c.steps = 0; c.faults.clear(); }, "steps: must be >= 1, got 0"},
      {[](TrainConfig& c) { c.threads = 0; }, "threads: must be >= 1, got 0"},
      {[](TrainConfig& c) { c.eval_every = -1; }, "eval_every: must be >= 0, got -1"},
      {[](TrainConfig& c) { c.model.depth = 7; }, "model.depth: 1..6, got 7"},
      {[](TrainConfig& c) { c.model.base = 0; }, "model.base: 1..256, got 0"},
      {[](TrainConfig& c) { c.device = "tpu"; }, R"(device: unknown "tpu", expected auto|cpu|cuda)"},
      {[](TrainConfig& c) { c.optimizer = "rmsprop"; },
       R"(optimizer: unknown "rmsprop", expected sgd|adam)"},
      {[](TrainConfig& c) { c.momentum = 1.0; }, "momentum: must be in [0, 1), got 1"},
      {[](TrainConfig& c) { c.momentum = 0.0; }, "nesterov: needs momentum > 0"},
      {[](TrainConfig& c) { c.lr_schedule = "linear"; },
       R"(lr_schedule: unknown "linear", expected constant|cosine|step)"},
      {[](TrainConfig& c) { c.lr_step_gamma = 0; }, "lr_step_gamma: must be in (0, 1], got 0"},
      {[](TrainConfig& c) { c.clip.kind = "adaptive"; },
       R"(clip.kind: unknown "adaptive", expected off|norm|value)"},
      {[](TrainConfig& c) { c.clip = {"norm", 0}; }, "clip.threshold: must be > 0, got 0"},
      {[](TrainConfig& c) { c.mode = "enforce"; }, R"(mode: unknown "enforce", expected observe|guard|gated)"},
      {[](TrainConfig& c) { c.gate_timeout_ms = 0; }, "gate_timeout_ms: 1..60000, got 0"},
      {[](TrainConfig& c) { c.monitor = "localhost"; },
       R"(monitor: expected host:port (port 1..65535) or unix:path, got "localhost")"},
      {[](TrainConfig& c) { c.run_id = "my run"; },
       R"(run_id: must be 1-128 characters from A-Z a-z 0-9 . _ -, not "." or "..", or empty; got "my run")"},
      {[](TrainConfig& c) { c.faults = {{"boom", 3, 10}}; },
       R"(faults[0].kind: unknown "boom", expected grad_spike|lr_spike|lr_ramp|grad_ascent|nan|stall|hang)"},
      {[](TrainConfig& c) { c.faults = {{"nan", 3, 1, -2}}; },
       "faults[0].rank: must be -1 (every rank) or in 0..65535, got -2"},
      {[](TrainConfig& c) { c.faults = {{"stall", 3, 1, 1, 0}}; }, "faults[0].seconds: must be in (0, 86400], got 0"},
      {[](TrainConfig& c) { c.faults = {{"stall", 3, 1, 1, 1, 0}}; }, "faults[0].count: must be >= 1, got 0"},
      {[](TrainConfig& c) { c.faults = {{"grad_spike", 600, 1000}}; },
       "faults[0].step: must be in 0..599, got 600"},
      {[](TrainConfig& c) { c.faults = {{"lr_spike", 3, -2}}; }, "faults[0].factor: must be > 0, got -2"},
      {[](TrainConfig& c) { c.scenario = "replay"; }, R"(scenario: unknown "replay", expected |seed)"},
      {[](TrainConfig& c) { c.scenario = "seed"; c.faults = {{"nan", 3, 1}}; },
       R"(scenario: "seed" sets the faults itself; remove the 1 explicit fault(s))"},
      {[](TrainConfig& c) { c.data.synthetic.size = 30; },
       "data.size: 30 is not divisible by 4 (2^(model.depth-1))"},
      {[](TrainConfig& c) { c.data.synthetic.foreground_fraction = 1.5; },
       "data.foreground_fraction: must be in [0, 1), got 1.5"},
      {[](TrainConfig& c) { c.data.synthetic.noise = -0.1; }, "data.noise: must be >= 0, got -0.1"},
      {[](TrainConfig& c) { c.data.synthetic.images = 0; }, "data.images: must be >= 1, got 0"},
      {[](TrainConfig& c) { c.data.synthetic.val_fraction = 1; },
       "data.val_fraction: must be in [0, 1), got 1"},
      {[](TrainConfig& c) { c.data.synthetic.images = 2; c.data.synthetic.val_fraction = 0.75; },
       "data.val_fraction: 0.75 of 2 images leaves no training items"},
      {[](TrainConfig& c) { c.data.augment = false; c.batch = 37; },
       "batch: 37 exceeds the 36 synthetic training items"},
  };
  for (const Case& test : cases) {
    TrainConfig c;
    test.mutate(c);
    EXPECT_EQ(Validate(c), std::vector<std::string>{test.message});
  }
}

TEST(TrainConfig, validate_refuses_values_past_the_documented_bounds) {
  const auto real_data = [](TrainConfig& c) { c.data.dir = "/data/case"; };
  const std::vector<Case> cases = {
      {[](TrainConfig& c) { c.threads = 296; }, "threads: must be <= 256, got 296"},
      {[](TrainConfig& c) { c.steps = 5'000'000'000; }, "steps: must be <= 1000000000, got 5000000000"},
      {[&](TrainConfig& c) { real_data(c); c.batch = 65'537; }, "batch: must be <= 65536, got 65537"},
      {[](TrainConfig& c) { c.eval_every = 4'294'967'296; }, "eval_every: must be <= 1000000000, got 4294967296"},
      {[](TrainConfig& c) { c.checkpoint_every = 4'294'967'296; },
       "checkpoint_every: must be <= 1000000000, got 4294967296"},
      {[](TrainConfig& c) { c.lr_step_every = 2'000'000'000; }, "lr_step_every: must be <= 1000000000, got 2000000000"},
      {[](TrainConfig& c) { c.data.synthetic.size = 16'384; }, "data.size: must be <= 8192, got 16384"},
      {[](TrainConfig& c) { c.data.synthetic.images = 2'000'000; }, "data.images: must be <= 1000000, got 2000000"},
      {[](TrainConfig& c) { c.data.synthetic.channels = 4096; }, "data.channels: must be <= 1024, got 4096"},
      {[](TrainConfig& c) { c.data.synthetic.images = 100'000; c.data.synthetic.size = 256; },
       "data.images: 100000 images of 6+1 channels at 256x256 need 1025.39 GiB (x6 augmented); must be <= 32 GiB"},
      {[](TrainConfig& c) { c.batch = 200; c.model.base = 256; c.data.synthetic.size = 1024; },
       "batch: 200 items x model.base 256 channels at 1024x1024 need 200 GiB for the first level; must be <= 64 GiB"},
      {[](TrainConfig& c) { c.steps = 1'000'000; c.checkpoint_every = 1; c.checkpoint_dir = "ck"; },
       "checkpoint_every: 1 writes 1000000 checkpoints of 1000000 steps into checkpoint_dir; must be <= 100000"},
      {[](TrainConfig& c) { c.faults.assign(1001, FaultConfig{"nan", 1, 1}); },
       "faults: must hold <= 1000 faults, got 1001"},
      {[](TrainConfig& c) { c.trace_csv.assign(5000, 'a'); }, "trace_csv: must be <= 4095 characters, got 5000"},
  };
  for (const Case& test : cases) {
    TrainConfig c;
    test.mutate(c);
    EXPECT_EQ(Validate(c), std::vector<std::string>{test.message});
  }
}

TEST(TrainConfig, validate_accepts_every_bound_itself) {
  TrainConfig c;
  c.data.dir = "/data/case";
  c.threads = Limits::kThreads;
  c.steps = Limits::kSteps;
  c.batch = Limits::kBatch;
  c.eval_every = c.log_every = c.checkpoint_every = c.lr_step_every = Limits::kSteps;
  c.faults.assign(Limits::kFaults, FaultConfig{"nan", 1, 1});
  EXPECT_EQ(Validate(c), std::vector<std::string>{});
}

TEST(TrainConfig, validate_reports_every_problem_at_once) {
  TrainConfig c;
  c.lr = -1;
  c.batch = 0;
  c.mode = "x";
  EXPECT_EQ(Validate(c).size(), 3u);
}

TEST(TrainConfig, a_data_dir_skips_the_synthetic_checks) {
  TrainConfig c;
  c.data.dir = "/data/case";
  c.data.synthetic.size = 30;
  EXPECT_TRUE(Validate(c).empty());
}

TEST(TrainConfig, seed_scenario_is_one_thousandfold_gradient_spike_at_seven_twelfths) {
  TrainConfig c;
  c.scenario = "seed";
  const std::vector<FaultConfig> faults = EffectiveFaults(c);
  ASSERT_EQ(faults.size(), 1u);
  EXPECT_EQ(faults[0].kind, "grad_spike");
  EXPECT_EQ(faults[0].step, 350);  // of 600: the case blew up in epoch 12
  EXPECT_EQ(faults[0].factor, 1000.0);
  EXPECT_TRUE(Validate(c).empty());
  c.scenario = "";
  c.faults = {{"nan", 5, 1}};
  EXPECT_EQ(EffectiveFaults(c).size(), 1u);
  EXPECT_EQ(EffectiveFaults(c)[0].kind, "nan");
}

TEST(TrainConfig, schedules_give_the_documented_learning_rates) {
  TrainConfig c;
  EXPECT_EQ(ScheduledLr(c, 599), 0.01);
  c.lr_schedule = "cosine";
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 0), 0.01);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 300), 0.005);
  EXPECT_NEAR(ScheduledLr(c, 600), 0.0, 1e-18);
  c.lr_schedule = "step";
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 199), 0.01);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 200), 0.001);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 450), 0.0001);
  c.lr_schedule = "constant";
  c.lr_warmup_steps = 100;  // linear from 1/100 of the rate, then the schedule's
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 0), 0.0001);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 49), 0.005);
  EXPECT_DOUBLE_EQ(ScheduledLr(c, 100), 0.01);
}

TEST(TrainConfig, monitor_is_off_when_empty_or_disabled) {
  TrainConfig c;
  EXPECT_TRUE(MonitorEnabled(c));
  c.no_monitor = true;
  EXPECT_FALSE(MonitorEnabled(c));
  c.no_monitor = false;
  c.monitor = "";
  EXPECT_FALSE(MonitorEnabled(c));
  EXPECT_TRUE(Validate(c).empty());
}

TEST(TrainConfig, stall_and_hang_need_no_factor) {
  TrainConfig c;
  c.faults = {{"stall", 3, 0, 1, 0.5, 2}, {"hang", 4, 0, 0}};
  EXPECT_TRUE(Validate(c).empty()) << Validate(c)[0];
}

TEST(TrainConfig, fault_flags_read_kind_step_and_keys) {
  FaultConfig f = ParseFaultFlag("stall@10,rank=1,seconds=2.5,count=5");
  EXPECT_EQ(f.kind, "stall");
  EXPECT_EQ(f.step, 10);
  EXPECT_EQ(f.rank, 1);
  EXPECT_EQ(f.seconds, 2.5);
  EXPECT_EQ(f.count, 5);
  FaultConfig spike = ParseFaultFlag("grad_spike@300,factor=1e3");
  EXPECT_EQ(spike.factor, 1000.0);
  EXPECT_EQ(spike.rank, -1);  // every rank
  const auto error = [](const std::string& spec) {
    try {
      ParseFaultFlag(spec);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error("stall"), R"(--fault "stall": expected KIND@STEP[,KEY=VALUE...])");
  EXPECT_EQ(error("stall@x"), R"(--fault "stall@x": STEP: expected an integer, got "x")");
  EXPECT_EQ(error("hang@3,rank"), R"(--fault "hang@3,rank": expected KEY=VALUE, got "rank")");
  EXPECT_EQ(error("hang@3,rank=1.5"), R"(--fault "hang@3,rank=1.5": rank: expected an integer, got "1.5")");
  EXPECT_EQ(error("hang@3,when=2"),
            R"(--fault "hang@3,when=2": unknown key "when", expected factor, rank, seconds or count)");
}

TEST(TrainConfig, rank_paths_keep_rank_zero_and_mark_the_others) {
  EXPECT_EQ(RankPath("out/summary.json", 0), "out/summary.json");
  EXPECT_EQ(RankPath("out/summary.json", 1), "out/summary-rank1.json");
  EXPECT_EQ(RankPath("run.d/spool", 12), "run.d/spool-rank12");
  EXPECT_EQ(RankPath(".hidden", 2), ".hidden-rank2");
  EXPECT_EQ(RankPath("", 3), "");
}

TEST(TrainConfig, validation_count_rounds_to_nearest) {
  EXPECT_EQ(ValidationCount(48, 0.25), 12);
  EXPECT_EQ(ValidationCount(10, 0.25), 3);  // 2.5 rounds away from zero
  EXPECT_EQ(ValidationCount(7, 0.0), 0);
}

}  // namespace
}  // namespace gradwatch::train
