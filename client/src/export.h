// `gradwatch export`: every stored step of a run (and, in JSON Lines, its evaluations),
// written by a StepWriter: CSV (a header row, then one row per step; one column per system
// metric and per scalar name of the run, "scalar.NAME") or JSON Lines (a "scalars" object and
// a "system" object of what the trainer reported). A data-parallel run's export has every
// rank's own steps, rank 0's first, with a rank column ("rank" key); its run-level values
// (mean loss, the averaged gradient's norm) are rank 0's rows'.
#pragma once

#include <memory>
#include <ostream>
#include <string>

#include "client.h"

namespace gradwatch::cli {

// Numbers as written: the shortest text that reads back to the same double ("0.1",
// "2.0000000000000001e-21"), "nan", "inf", "-inf".
std::string RoundTrip(double v);

class StepWriter {
 public:
  virtual ~StepWriter() = default;
  virtual void Begin() = 0;  // once, before the first step
  // `rank`: the step's rank in a data-parallel run, -1 for a single process (no rank column).
  virtual void Step(const v1::StepReport& step, int rank) = 0;
  virtual void Eval(const v1::EvalReport& eval) = 0;  // after every step
  virtual void End() {}                                // once, after the last evaluation
};

// "csv" or "jsonl" (the flag's check allows no other).
std::unique_ptr<StepWriter> MakeStepWriter(const std::string& format, std::ostream& out);

// Pages through the run's steps and writes them, then its evaluations. The first page is
// fetched before anything is written, so an unknown run fails with no output.
void Export(Client& c, const std::string& run_id, StepWriter& writer);

}  // namespace gradwatch::cli
