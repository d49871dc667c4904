#include "export.h"

#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>

namespace gradwatch::cli {
namespace {

using nlohmann::json;

constexpr uint32_t kStepsPerPage = 5000;

class CsvWriter final : public StepWriter {
 public:
  explicit CsvWriter(std::ostream& out) : out_(out) {}
  void Begin() override {
    out_ << "step,epoch,loss,lr,grad_norm,jaccard_soft,jaccard_hard,accuracy,clip_kind,clip_threshold,"
            "update_skipped\n";
  }
  void Step(const v1::StepReport& s) override {
    out_ << s.step() << "," << s.epoch() << "," << RoundTrip(s.loss()) << "," << RoundTrip(s.learning_rate()) << ","
         << RoundTrip(s.grad_norm()) << "," << Metric(s.has_jaccard_soft(), s.jaccard_soft()) << ","
         << Metric(s.has_jaccard_hard(), s.jaccard_hard()) << "," << Metric(s.has_accuracy(), s.accuracy()) << ","
         << v1::Clipping::Kind_Name(s.clipping().kind()) << "," << RoundTrip(s.clipping().threshold()) << ","
         << (s.update_skipped() ? "true" : "false") << "\n";
  }
  void Eval(const v1::EvalReport&) override {}  // CSV has one row per step

 private:
  // An optional metric: empty when the trainer did not report it (as gradwatch CSV reads it).
  static std::string Metric(bool has, double v) { return has ? RoundTrip(v) : ""; }
  std::ostream& out_;
};

class JsonlWriter final : public StepWriter {
 public:
  explicit JsonlWriter(std::ostream& out) : out_(out) {}
  void Begin() override {}
  void Step(const v1::StepReport& s) override {
    json layers = json::array();
    for (float v : s.layer_grad_norms()) layers.push_back(v);
    Line({{"type", "step"}, {"step", s.step()}, {"epoch", s.epoch()}, {"loss", s.loss()},
          {"lr", s.learning_rate()}, {"grad_norm", s.grad_norm()}, {"layer_grad_norms", layers},
          {"jaccard_soft", s.jaccard_soft()}, {"jaccard_hard", s.jaccard_hard()}, {"accuracy", s.accuracy()},
          {"clip_kind", v1::Clipping::Kind_Name(s.clipping().kind())},
          {"clip_threshold", s.clipping().threshold()}, {"update_skipped", s.update_skipped()},
          {"rolled_back_to", s.rolled_back_to()}});
  }
  void Eval(const v1::EvalReport& e) override {
    Line({{"type", "eval"}, {"step", e.step()}, {"loss", e.loss()}, {"jaccard_soft", e.jaccard_soft()},
          {"jaccard_hard", e.jaccard_hard()}, {"accuracy", e.accuracy()}});
  }

 private:
  void Line(const json& j) { out_ << j.dump() << "\n"; }
  std::ostream& out_;
};

}  // namespace

std::string RoundTrip(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, ec == std::errc() ? end : buf);
}

std::unique_ptr<StepWriter> MakeStepWriter(const std::string& format, std::ostream& out) {
  if (format == "jsonl") return std::make_unique<JsonlWriter>(out);
  return std::make_unique<CsvWriter>(out);
}

void Export(Client& c, const std::string& run_id, StepWriter& writer) {
  v1::ListStepsRequest req;
  req.set_run_id(run_id);
  req.set_limit(kStepsPerPage);
  auto page = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req, "export");
  writer.Begin();
  for (;;) {
    for (const auto& s : page.steps()) writer.Step(s);
    if (page.steps_size() < static_cast<int>(req.limit())) break;
    req.set_after_step(page.steps(page.steps_size() - 1).step());
    page = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req, "export");
  }
  v1::ListEvalsRequest er;
  er.set_run_id(run_id);
  auto evals = c.Call<v1::ListEvalsRequest, v1::ListEvalsResponse>(&v1::Runs::Stub::ListEvals, er, "export");
  for (const auto& e : evals.evals()) writer.Eval(e);
}

}  // namespace gradwatch::cli
