#include "gradwatch/detect/baselines.h"

#include <cmath>
#include <deque>
#include <numeric>

namespace gradwatch::detect {
namespace {

bool HasGrad(const StepSample& s) {
  return s.has_grad_norm;
}

double Mean(const std::deque<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

// Unbiased standard deviation, as torch.std.
double Std(const std::deque<double>& v, double mean) {
  double sum = 0;
  for (double x : v) sum += (x - mean) * (x - mean);
  return std::sqrt(sum / static_cast<double>(v.size() - 1));
}

void PushBounded(std::deque<double>& window, double x, size_t size) {
  window.push_back(x);
  if (window.size() > size) window.pop_front();
}

class ZClip : public Baseline {
 public:
  std::string name() const override { return "zclip"; }
  bool OnStep(const StepSample& s) override {
    if (!HasGrad(s) || !std::isfinite(s.grad_norm)) return false;  // ZClip has no NaN rule
    if (warmup_.size() < kWarmup) return Warm(s.grad_norm);
    double std = std::sqrt(var_);
    double z = (s.grad_norm - mean_) / (std + 1e-6);
    bool clip = z > kZ;
    // ZClip's adaptive clip: mean + z_thresh * std / (z / z_thresh); the EMA learns the clipped
    // norm.
    double g = clip ? mean_ + kZ * std / (z / kZ) : s.grad_norm;
    mean_ = kAlpha * mean_ + (1 - kAlpha) * g;
    var_ = kAlpha * var_ + (1 - kAlpha) * (g - mean_) * (g - mean_);
    return clip;
  }

 private:
  static constexpr size_t kWarmup = 25;
  static constexpr double kZ = 2.5, kAlpha = 0.97;
  bool Warm(double g) {
    warmup_.push_back(g);
    if (warmup_.size() < kWarmup) return false;
    mean_ = Mean(warmup_);
    var_ = 0;
    for (double x : warmup_) var_ += (x - mean_) * (x - mean_) / kWarmup;  // population variance
    return false;
  }
  std::deque<double> warmup_;
  double mean_ = 0, var_ = 0;
};

class OlmoSkipStep : public Baseline {
 public:
  std::string name() const override { return "olmo_skip_step"; }
  bool OnStep(const StepSample& s) override {
    bool skip = losses_.size() + 1 >= kWindow / 2 &&
                (Above(losses_, s.loss) || (HasGrad(s) && Above(grads_, s.grad_norm)));
    PushBounded(losses_, s.loss, kWindow);
    if (HasGrad(s)) PushBounded(grads_, s.grad_norm, kWindow);
    return skip;
  }

 private:
  static constexpr size_t kWindow = 128;
  // !(x - mean <= 6 std): a NaN anywhere makes the step skip, as in OLMo-core.
  static bool Above(const std::deque<double>& history, double x) {
    if (history.size() < 2) return false;
    double mean = Mean(history);
    return !(x - mean <= 6 * Std(history, mean));
  }
  std::deque<double> losses_, grads_;
};

// Megatron's is_unexpectedly_large: the max of the first 100 |values| is the reference.
class LargeValue {
 public:
  bool Check(double x) {
    x = std::fabs(x);
    if (!std::isfinite(x)) return false;  // checked separately
    if (seen_ < 100) {
      ++seen_;
      max_ = std::fmax(max_, x);
      return false;
    }
    return x >= 10 * max_;
  }

 private:
  int seen_ = 0;
  double max_ = 0;
};

class Megatron : public Baseline {
 public:
  std::string name() const override { return "megatron"; }
  bool OnStep(const StepSample& s) override {
    bool nan = !std::isfinite(s.loss) || (HasGrad(s) && !std::isfinite(s.grad_norm));
    bool large_loss = loss_.Check(s.loss);
    bool large_grad = HasGrad(s) && grad_.Check(s.grad_norm);
    return nan || large_loss || large_grad;
  }

 private:
  LargeValue loss_, grad_;
};

class KillLossSpike : public Baseline {
 public:
  std::string name() const override { return "llm_foundry_kill_loss_spike"; }
  bool OnStep(const StepSample& s) override {
    bool flag = false;
    if (window_.size() == kWindow) {
      outliers_ = s.loss >= 2 * Mean(window_) ? outliers_ + 1 : 0;
      flag = outliers_ > kPatience;
    }
    PushBounded(window_, s.loss, kWindow);
    return flag;
  }

 private:
  static constexpr size_t kWindow = 100;
  static constexpr int kPatience = 4;
  std::deque<double> window_;
  int outliers_ = 0;
};

class LightningSpike : public Baseline {
 public:
  std::string name() const override { return "lightning_spike_detection"; }
  bool OnStep(const StepSample& s) override {
    bool spike = steps_++ >= kWarmup && IsSpike(s.loss);
    if (!spike && std::isfinite(s.loss)) {
      PushBounded(window_, s.loss, kWindow);
      last_ = s.loss;
    }
    return spike;
  }

 private:
  static constexpr size_t kWindow = 10;
  static constexpr int kWarmup = 1;
  bool IsSpike(double loss) const {
    if (!std::isfinite(loss)) return true;
    if (loss - last_ <= 0 || window_.empty()) return false;  // improved
    double mean = Mean(window_);
    return std::fabs(loss - mean) >= 2.0 * std::fabs(mean);
  }
  std::deque<double> window_;
  double last_ = 0;
  int steps_ = 0;
};

class TerminateOnNaN : public Baseline {
 public:
  std::string name() const override { return "keras_terminate_on_nan"; }
  bool OnStep(const StepSample& s) override { return !std::isfinite(s.loss); }
};

}  // namespace

std::vector<std::unique_ptr<Baseline>> MakeBaselines() {
  std::vector<std::unique_ptr<Baseline>> all;
  all.push_back(std::make_unique<ZClip>());
  all.push_back(std::make_unique<OlmoSkipStep>());
  all.push_back(std::make_unique<Megatron>());
  all.push_back(std::make_unique<KillLossSpike>());
  all.push_back(std::make_unique<LightningSpike>());
  all.push_back(std::make_unique<TerminateOnNaN>());
  return all;
}

std::unique_ptr<Baseline> MakeBaseline(std::string_view name) {
  for (auto& b : MakeBaselines())
    if (b->name() == name) return std::move(b);
  return nullptr;
}

}  // namespace gradwatch::detect
