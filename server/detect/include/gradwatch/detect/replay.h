// Offline replay: parse a recorded run from CSV and feed it through the detectors.
//
// gradwatch CSV: a header row naming the columns, `step` and `loss` required; optional `epoch`,
// `lr`, `grad_norm`, `update_ratio`, `jaccard_soft`, `jaccard_hard`, `accuracy`, `val_loss`,
// `val_jaccard_soft`, `val_jaccard_hard`, `val_accuracy`. One row per step, steps increasing.
// Keras CSVLogger: `epoch` plus metric columns (`loss`, `acc`/`accuracy`, `jaccard_coef` -> soft
// Jaccard, `jaccard_coef_int` -> hard Jaccard, `lr`, and their `val_` forms). One row per epoch;
// Keras epochs are 0-based, so step = epoch = Keras epoch + 1.
// In both: an empty cell (or Keras' "NA") is "not reported"; "nan", "inf", "-inf" are
// non-finite values; unknown columns are ignored; no quoting (neither format quotes numbers).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gradwatch/detect/event.h"
#include "gradwatch/detect/thresholds.h"

namespace gradwatch::detect {

enum class CsvFormat { kAuto, kGradwatch, kKeras };

struct ReplayRecord {
  StepSample step;                 // owning except layer_norms: use sample()
  std::vector<float> layer_norms;  // per-layer grad norms; empty from either CSV format
  std::optional<EvalSample> eval;  // set when the row has any validation value
  // step, with layer_norms pointing into this record. Valid while the record lives unchanged.
  StepSample sample() const;
};

struct ParseResult {
  std::vector<ReplayRecord> records;
  CsvFormat format = CsvFormat::kAuto;  // the format parsed, after autodetection
  // Empty on success, else where and why, e.g.
  // "trace.csv:14: column 3 (loss): 'abc' is not a number".
  std::string error;
  bool ok() const { return error.empty(); }
};

// Parses CSV text. `source` names it in errors. kAuto picks Keras when the header has `epoch`
// but no `step`, gradwatch otherwise.
ParseResult ParseCsv(std::string_view text, std::string_view source,
                     CsvFormat format = CsvFormat::kAuto);
// Reads and parses a file; an unreadable file is an error result, not an exception.
ParseResult ReadCsvFile(const std::string& path, CsvFormat format = CsvFormat::kAuto);

// Feeds records through a RunDetector and an IncidentTracker (gap t.incident_gap): each step,
// then its evaluation. Returns all events, in order, with incident ids.
std::vector<Event> ReplayOffline(const std::vector<ReplayRecord>& records, const RunInfo& info,
                                 const Thresholds& t);

}  // namespace gradwatch::detect
