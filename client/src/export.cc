#include "export.h"

#include <charconv>
#include <cmath>
#include <set>
#include <string_view>
#include <vector>
#include <nlohmann/json.hpp>

namespace gradwatch::cli {
namespace {

using nlohmann::json;

constexpr uint32_t kStepsPerPage = 5000;

// System metrics as exported: (column or key, whether reported, value).
struct SystemField {
  const char* name;
  bool has;
  double value;
};

constexpr size_t kSystemFields = 8;

std::vector<SystemField> SystemFields(const v1::StepReport& s) {
  const v1::SystemMetrics& m = s.system();
  return {{"data_seconds", m.has_data_seconds(), m.data_seconds()},
          {"compute_seconds", m.has_compute_seconds(), m.compute_seconds()},
          {"report_seconds", m.has_report_seconds(), m.report_seconds()},
          {"resident_bytes", m.has_resident_bytes(), static_cast<double>(m.resident_bytes())},
          {"cuda_allocated_bytes", m.has_cuda_allocated_bytes(), static_cast<double>(m.cuda_allocated_bytes())},
          {"cuda_reserved_bytes", m.has_cuda_reserved_bytes(), static_cast<double>(m.cuda_reserved_bytes())},
          {"cuda_peak_allocated_bytes", m.has_cuda_peak_allocated_bytes(),
           static_cast<double>(m.cuda_peak_allocated_bytes())},
          {"device_utilization", m.has_device_utilization(), m.device_utilization()}};
}

// One column per scalar name of the whole run (sorted, "scalar.NAME") and per system metric
// any step reported, so the rows are kept until End: the header needs them all. Layer norms are not in the CSV and not kept.
class CsvWriter final : public StepWriter {
 public:
  explicit CsvWriter(std::ostream& out) : out_(out) {}
  void Begin() override {}
  void Step(const v1::StepReport& s, int rank) override {
    rows_.push_back({s, rank});
    rows_.back().step.clear_layer_grad_norms();
    rows_.back().step.clear_sample_ids();
    ranked_ = ranked_ || rank >= 0;
    for (const auto& [name, value] : s.scalars()) names_.insert(name);
    std::vector<SystemField> fields = SystemFields(s);
    for (size_t i = 0; i < fields.size(); ++i) system_[i] = system_[i] || fields[i].has;
  }
  void Eval(const v1::EvalReport&) override {}  // CSV has one row per step
  void End() override {
    out_ << (ranked_ ? "step,rank," : "step,")
         << "epoch,loss,lr,grad_norm,jaccard_soft,jaccard_hard,accuracy,clip_kind,clip_threshold,update_skipped";
    if (ranked_) out_ << ",local_grad_norm";
    std::vector<SystemField> fields = SystemFields(v1::StepReport());
    for (size_t i = 0; i < fields.size(); ++i) {
      if (system_[i]) out_ << "," << fields[i].name;
    }
    for (const std::string& name : names_) out_ << ",scalar." << name;
    out_ << "\n";
    for (const RankedStep& row : rows_) Row(row.step, row.rank);
  }

 private:
  struct RankedStep {
    v1::StepReport step;
    int rank;
  };
  void Row(const v1::StepReport& s, int rank) {
    out_ << s.step() << ",";
    if (ranked_) out_ << rank << ",";
    out_ << s.epoch() << "," << RoundTrip(s.loss()) << "," << RoundTrip(s.learning_rate()) << ","
         << RoundTrip(s.grad_norm()) << "," << Metric(s.has_jaccard_soft(), s.jaccard_soft()) << ","
         << Metric(s.has_jaccard_hard(), s.jaccard_hard()) << "," << Metric(s.has_accuracy(), s.accuracy()) << ","
         << v1::Clipping::Kind_Name(s.clipping().kind()) << "," << RoundTrip(s.clipping().threshold()) << ","
         << (s.update_skipped() ? "true" : "false");
    if (ranked_) out_ << "," << Metric(s.has_local_grad_norm(), s.local_grad_norm());
    std::vector<SystemField> fields = SystemFields(s);
    for (size_t i = 0; i < fields.size(); ++i) {
      if (system_[i]) out_ << "," << Metric(fields[i].has, fields[i].value);
    }
    for (const std::string& name : names_) {
      auto it = s.scalars().find(name);
      out_ << "," << Metric(it != s.scalars().end(), it == s.scalars().end() ? 0 : it->second);
    }
    out_ << "\n";
  }
  // An optional metric: empty when the trainer did not report it (as gradwatch CSV reads it).
  static std::string Metric(bool has, double v) { return has ? RoundTrip(v) : ""; }
  std::ostream& out_;
  std::vector<RankedStep> rows_;
  bool ranked_ = false;  // a data-parallel run: a rank column
  std::set<std::string> names_;
  bool system_[kSystemFields] = {};  // which system metrics any step reported: their columns
};

class JsonlWriter final : public StepWriter {
 public:
  explicit JsonlWriter(std::ostream& out) : out_(out) {}
  void Begin() override {}
  void Step(const v1::StepReport& s, int rank) override {
    json layers = json::array();
    for (float v : s.layer_grad_norms()) layers.push_back(v);
    json line = {{"type", "step"}, {"step", s.step()}, {"epoch", s.epoch()}, {"loss", s.loss()},
          {"lr", s.learning_rate()}, {"grad_norm", s.grad_norm()}, {"layer_grad_norms", layers},
          {"jaccard_soft", s.jaccard_soft()}, {"jaccard_hard", s.jaccard_hard()}, {"accuracy", s.accuracy()},
          {"clip_kind", v1::Clipping::Kind_Name(s.clipping().kind())},
          {"clip_threshold", s.clipping().threshold()}, {"update_skipped", s.update_skipped()},
          {"rolled_back_to", s.rolled_back_to()}, {"scalars", Scalars(s)}, {"system", System(s)}};
    if (rank >= 0) {
      line["rank"] = rank;
      if (s.has_local_grad_norm()) line["local_grad_norm"] = s.local_grad_norm();
    }
    Line(line);
  }
  void Eval(const v1::EvalReport& e) override {
    Line({{"type", "eval"}, {"step", e.step()}, {"loss", e.loss()}, {"jaccard_soft", e.jaccard_soft()},
          {"jaccard_hard", e.jaccard_hard()}, {"accuracy", e.accuracy()}});
  }

 private:
  static json Scalars(const v1::StepReport& s) {
    json out = json::object();
    for (const auto& [name, value] : s.scalars()) out[name] = value;  // non-finite: null, as the other fields
    return out;
  }
  static json System(const v1::StepReport& s) {
    json out = json::object();
    for (const SystemField& f : SystemFields(s)) {
      if (!f.has) continue;
      const bool bytes = std::string_view(f.name).find("_bytes") != std::string_view::npos;
      out[f.name] = bytes ? json(static_cast<uint64_t>(f.value)) : json(f.value);
    }
    return out;
  }
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

namespace {

// Writes one rank's steps, page by page, starting from `page` (the first, already fetched).
void ExportRank(Client& c, v1::ListStepsRequest req, v1::ListStepsResponse page, int rank, StepWriter& writer) {
  for (;;) {
    for (const auto& s : page.steps()) writer.Step(s, rank);
    if (page.steps_size() < static_cast<int>(req.limit())) break;
    req.set_after_step(page.steps(page.steps_size() - 1).step());
    page = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req, "export");
  }
}

}  // namespace

void Export(Client& c, const std::string& run_id, StepWriter& writer) {
  v1::ListStepsRequest req;
  req.set_run_id(run_id);
  req.set_limit(kStepsPerPage);
  auto page = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req, "export");
  v1::GetRunRequest get;
  get.set_run_id(run_id);
  const uint32_t world = c.Call<v1::GetRunRequest, v1::Run>(&v1::Runs::Stub::GetRun, get, "export").world_size();
  writer.Begin();
  ExportRank(c, req, std::move(page), world >= 2 ? 0 : -1, writer);
  for (uint32_t rank = 1; rank < world; ++rank) {
    req.set_rank(rank);
    page = c.Call<v1::ListStepsRequest, v1::ListStepsResponse>(&v1::Runs::Stub::ListSteps, req, "export");
    ExportRank(c, req, std::move(page), static_cast<int>(rank), writer);
  }
  v1::ListEvalsRequest er;
  er.set_run_id(run_id);
  auto evals = c.Call<v1::ListEvalsRequest, v1::ListEvalsResponse>(&v1::Runs::Stub::ListEvals, er, "export");
  for (const auto& e : evals.evals()) writer.Eval(e);
  writer.End();
}

}  // namespace gradwatch::cli
