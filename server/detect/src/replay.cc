#include "gradwatch/detect/replay.h"

#include <cerrno>
#include <cmath>
#include <cstring>

#include "csv.h"
#include "gradwatch/common/file.h"
#include "format.h"
#include "gradwatch/detect/incident.h"
#include "gradwatch/detect/run_detector.h"

namespace gradwatch::detect {
namespace {

enum Slot {
  kStep,
  kEpoch,
  kLoss,
  kLr,
  kGradNorm,
  kUpdateRatio,
  kJacSoft,
  kJacHard,
  kAcc,
  kValLoss,
  kValJacSoft,
  kValJacHard,
  kValAcc,
  kRank,  // a data-parallel export: rows of rank >= 1 are that rank's own, not the run's
  kSlots
};

struct ColumnName {
  const char* name;
  Slot slot;
};

constexpr ColumnName kGradwatchColumns[] = {
    {"step", kStep},
    {"epoch", kEpoch},
    {"loss", kLoss},
    {"lr", kLr},
    {"grad_norm", kGradNorm},
    {"update_ratio", kUpdateRatio},
    {"jaccard_soft", kJacSoft},
    {"jaccard_hard", kJacHard},
    {"accuracy", kAcc},
    {"val_loss", kValLoss},
    {"val_jaccard_soft", kValJacSoft},
    {"val_jaccard_hard", kValJacHard},
    {"val_accuracy", kValAcc},
    {"rank", kRank},
};

constexpr ColumnName kKerasColumns[] = {
    {"epoch", kStep},
    {"loss", kLoss},
    {"lr", kLr},
    {"learning_rate", kLr},
    {"jaccard_coef", kJacSoft},
    {"jaccard_coef_int", kJacHard},
    {"acc", kAcc},
    {"accuracy", kAcc},
    {"val_loss", kValLoss},
    {"val_jaccard_coef", kValJacSoft},
    {"val_jaccard_coef_int", kValJacHard},
    {"val_acc", kValAcc},
    {"val_accuracy", kValAcc},
};

template <size_t N>
Slot Find(const ColumnName (&names)[N], std::string_view name) {
  for (const ColumnName& c : names)
    if (name == c.name) return c.slot;
  return kSlots;
}

Slot SlotOf(std::string_view name, CsvFormat format) {
  return format == CsvFormat::kKeras ? Find(kKerasColumns, name) : Find(kGradwatchColumns, name);
}

CsvFormat Detect(const CsvLine& header) {
  bool step = false, epoch = false;
  for (std::string_view cell : header.cells) {
    step = step || cell == "step";
    epoch = epoch || cell == "epoch";
  }
  return epoch && !step ? CsvFormat::kKeras : CsvFormat::kGradwatch;
}

unsigned long long Ull(uint64_t v) {
  return static_cast<unsigned long long>(v);
}

// One row's numeric cells by slot; reported is false where the cell was empty or "NA".
struct Values {
  double v[kSlots];
  bool reported[kSlots];
};

// Parses one CSV text; the first error stops it.
class Parser {
 public:
  Parser(std::string_view source, CsvFormat format) : source_(source) { result_.format = format; }
  ParseResult Run(std::string_view text);

 private:
  bool ReadHeader(const CsvLine& header);
  bool ReadRow(const CsvLine& line);
  bool ReadStep(const CsvLine& line, StepSample* s);
  bool ReadValues(const CsvLine& line, Values* values);
  ReplayRecord Build(const StepSample& head, const Values& values) const;
  bool Fail(const CsvLine& line, const std::string& what);
  bool FailCell(const CsvLine& line, size_t col, const std::string& what);

  std::string_view source_;
  ParseResult result_;
  std::vector<std::string_view> names_;  // header cells
  std::vector<Slot> slots_;              // slot of each column
  size_t column_[kSlots];                // column of each slot; kNone if absent
  static constexpr size_t kNone = ~size_t{0};
};

ParseResult Parser::Run(std::string_view text) {
  std::vector<CsvLine> lines = SplitCsv(text);
  if (lines.empty()) {
    result_.error = Format("%.*s: empty file", static_cast<int>(source_.size()), source_.data());
    return std::move(result_);
  }
  bool ok = ReadHeader(lines[0]);
  for (size_t i = 1; ok && i < lines.size(); ++i) ok = ReadRow(lines[i]);
  if (!ok) result_.records.clear();
  return std::move(result_);
}

bool Parser::ReadHeader(const CsvLine& header) {
  if (result_.format == CsvFormat::kAuto) result_.format = Detect(header);
  names_ = header.cells;
  std::fill(column_, column_ + kSlots, kNone);
  for (size_t col = 0; col < names_.size(); ++col) {
    Slot slot = SlotOf(names_[col], result_.format);
    slots_.push_back(slot);
    if (slot == kSlots) continue;  // a column replay does not use
    if (column_[slot] != kNone)
      return FailCell(
          header, col,
          Format("duplicates column %zu (%.*s)", column_[slot] + 1,
                 static_cast<int>(names_[column_[slot]].size()), names_[column_[slot]].data()));
    column_[slot] = col;
  }
  const char* key = result_.format == CsvFormat::kKeras ? "epoch" : "step";
  if (column_[kStep] == kNone) return Fail(header, Format("no '%s' column in the header", key));
  if (column_[kLoss] == kNone) return Fail(header, "no 'loss' column in the header");
  return true;
}

bool Parser::ReadRow(const CsvLine& line) {
  if (line.cells.size() != names_.size())
    return Fail(line, Format("%zu cells, the header has %zu", line.cells.size(), names_.size()));
  // A data-parallel export (`gradwatch export`): rank 0's rows carry the run's values (the
  // averaged gradient's norm); the other ranks' rows are replayed by no detector.
  if (column_[kRank] != kNone && line.cells[column_[kRank]] != "0") return true;
  StepSample head;
  Values values;
  if (!ReadStep(line, &head) || !ReadValues(line, &values)) return false;
  if (!values.reported[kLoss])
    return FailCell(line, column_[kLoss], "is not reported; every row needs a loss");
  result_.records.push_back(Build(head, values));
  return true;
}

// The step (Keras: epoch + 1), increasing, and the gradwatch epoch column if present.
bool Parser::ReadStep(const CsvLine& line, StepSample* s) {
  size_t col = column_[kStep];
  uint64_t n = 0;
  if (!ParseCount(line.cells[col], &n)) return FailCell(line, col, "is not a whole number");
  s->step = result_.format == CsvFormat::kKeras ? n + 1 : n;
  s->epoch = static_cast<uint32_t>(result_.format == CsvFormat::kKeras ? n + 1 : 0);
  const auto& records = result_.records;
  if (!records.empty() && s->step <= records.back().step.step)
    return FailCell(
        line, col, Format("does not follow the previous step %llu", Ull(records.back().step.step)));
  col = column_[kEpoch];
  if (col == kNone || line.cells[col].empty()) return true;
  if (!ParseCount(line.cells[col], &n) || n > UINT32_MAX)
    return FailCell(line, col, "is not a whole number");
  s->epoch = static_cast<uint32_t>(n);
  return true;
}

// Every numeric column. An empty cell or "NA" (Keras' "not logged") is not reported.
bool Parser::ReadValues(const CsvLine& line, Values* values) {
  std::fill(values->v, values->v + kSlots, kNaN);
  std::fill(values->reported, values->reported + kSlots, false);
  for (size_t col = 0; col < slots_.size(); ++col) {
    Slot slot = slots_[col];
    std::string_view cell = line.cells[col];
    if (slot == kSlots || slot == kStep || slot == kEpoch || cell.empty() || cell == "NA") continue;
    if (!ParseNumber(cell, &values->v[slot])) return FailCell(line, col, "is not a number");
    values->reported[slot] = true;
  }
  return true;
}

// Not-reported values stay NaN, which StepSample reads as "not reported" for everything but the
// grad norm: a "nan" grad norm is a non-finite report, an empty one is none, hence has_grad_norm.
ReplayRecord Parser::Build(const StepSample& head, const Values& values) const {
  const double* v = values.v;
  ReplayRecord r;
  r.step = head;
  r.step.loss = v[kLoss];
  r.step.grad_norm = v[kGradNorm];
  r.step.has_grad_norm = values.reported[kGradNorm];
  r.step.learning_rate = v[kLr];
  r.step.update_ratio = v[kUpdateRatio];
  r.step.jaccard_soft = v[kJacSoft];
  r.step.jaccard_hard = v[kJacHard];
  r.step.accuracy = v[kAcc];
  const bool* got = values.reported;
  if (got[kValLoss] || got[kValJacSoft] || got[kValJacHard] || got[kValAcc])
    r.eval = EvalSample{head.step, v[kValLoss], v[kValJacSoft], v[kValJacHard], v[kValAcc]};
  return r;
}

bool Parser::Fail(const CsvLine& line, const std::string& what) {
  result_.error = Format("%.*s:%zu: %s", static_cast<int>(source_.size()), source_.data(),
                         line.number, what.c_str());
  return false;
}

bool Parser::FailCell(const CsvLine& line, size_t col, const std::string& what) {
  std::string_view name = names_[col], cell = line.cells[col];
  return Fail(line, Format("column %zu (%.*s): '%.*s' %s", col + 1, static_cast<int>(name.size()),
                           name.data(), static_cast<int>(cell.size()), cell.data(), what.c_str()));
}

}  // namespace

StepSample ReplayRecord::sample() const {
  StepSample s = step;
  s.layer_norms = layer_norms.empty() ? nullptr : layer_norms.data();
  s.n_layers = layer_norms.size();
  return s;
}

ParseResult ParseCsv(std::string_view text, std::string_view source, CsvFormat format) {
  return Parser(source, format).Run(text);
}

ParseResult ReadCsvFile(const std::string& path, CsvFormat format) {
  std::string text;
  if (!ReadWholeFile(path, &text)) {
    ParseResult r;
    r.error = Format("%s: cannot open: %s", path.c_str(), std::strerror(errno));
    return r;
  }
  return ParseCsv(text, path, format);
}

std::vector<Event> ReplayOffline(const std::vector<ReplayRecord>& records, const RunInfo& info,
                                 const Thresholds& t) {
  RunDetector detector(info, t);
  IncidentTracker incidents(t.incident_gap);
  std::vector<Event> out;
  for (const ReplayRecord& r : records) {
    std::vector<Event> events = detector.OnStep(r.sample());
    if (r.eval) {
      std::vector<Event> more = detector.OnEval(*r.eval);
      events.insert(events.end(), more.begin(), more.end());
    }
    for (Event& e : events) incidents.Assign(e);
    out.insert(out.end(), events.begin(), events.end());
  }
  return out;
}

}  // namespace gradwatch::detect
