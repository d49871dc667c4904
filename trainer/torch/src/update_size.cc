#include "gradwatch/torch/update_size.h"

#include <torch/torch.h>

#include <cstring>
#include <string>

namespace gradwatch::torchmon {
namespace {

// The update directions (dw = -lr * d) of one parameter group and the weights they move.
struct Directions {
  std::vector<at::Tensor> d, w;
  std::vector<double> lr;  // per direction
};

template <typename State>
State* StateOf(torch::optim::Optimizer& o, const at::Tensor& p) {
  auto it = o.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
  return it == o.state().end() ? nullptr : static_cast<State*>(it->second.get());
}

void AddSgd(torch::optim::Optimizer& o, torch::optim::OptimizerParamGroup& group, Directions* out) {
  const auto& opt = static_cast<const torch::optim::SGDOptions&>(group.options());
  for (const at::Tensor& p : group.params()) {
    if (!p.grad().defined()) continue;
    at::Tensor d = opt.weight_decay() != 0 ? p.grad().add(p.detach(), opt.weight_decay()) : p.grad();
    if (opt.momentum() != 0) {
      auto* state = StateOf<torch::optim::SGDParamState>(o, p);
      at::Tensor buf = state ? state->momentum_buffer().mul(opt.momentum()).add_(d, 1 - opt.dampening())
                             : d;
      d = opt.nesterov() ? d.add(buf, opt.momentum()) : buf;
    }
    out->d.push_back(d);
    out->w.push_back(p.detach());
    out->lr.push_back(opt.lr());
  }
}

void AddAdam(torch::optim::Optimizer& o, torch::optim::OptimizerParamGroup& group, Directions* out) {
  const auto& opt = static_cast<const torch::optim::AdamOptions&>(group.options());
  const double b1 = std::get<0>(opt.betas()), b2 = std::get<1>(opt.betas());
  for (const at::Tensor& p : group.params()) {
    if (!p.grad().defined()) continue;
    at::Tensor g = opt.weight_decay() != 0 ? p.grad().add(p.detach(), opt.weight_decay()) : p.grad();
    auto* state = StateOf<torch::optim::AdamParamState>(o, p);
    const int64_t step = (state ? state->step() : 0) + 1;
    at::Tensor m = state ? state->exp_avg().mul(b1).add_(g, 1 - b1) : g.mul(1 - b1);
    at::Tensor v = state ? state->exp_avg_sq().mul(b2).addcmul_(g, g, 1 - b2) : g.mul(g).mul_(1 - b2);
    if (opt.amsgrad() && state && state->max_exp_avg_sq().defined()) v = at::maximum(v, state->max_exp_avg_sq());
    const double bc1 = 1 - std::pow(b1, double(step)), bc2 = 1 - std::pow(b2, double(step));
    out->d.push_back(m.div_(v.sqrt_().div_(std::sqrt(bc2)).add_(opt.eps())));
    out->w.push_back(p.detach());
    out->lr.push_back(opt.lr() / bc1);
  }
}

// L2 norm of each tensor: one fused reduction; on CUDA, stacked and copied to the host once.
std::vector<double> Norms(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> norms = at::_foreach_norm(tensors, 2);
  std::vector<double> out(norms.size());
  if (tensors.front().is_cpu()) {
    for (size_t i = 0; i < norms.size(); ++i) out[i] = norms[i].item().toDouble();
    return out;
  }
  at::Tensor host = at::stack(norms).to(at::kDouble).to(at::kCPU);
  std::memcpy(out.data(), host.data_ptr<double>(), out.size() * sizeof(double));
  return out;
}

}  // namespace

UpdateSize PredictUpdate(torch::optim::Optimizer& optimizer) {
  torch::NoGradGuard no_grad;
  Directions dirs;
  const bool sgd = dynamic_cast<torch::optim::SGD*>(&optimizer) != nullptr;
  const bool adam = dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr;
  if (!sgd && !adam) return {};
  for (auto& group : optimizer.param_groups()) (sgd ? AddSgd : AddAdam)(optimizer, group, &dirs);
  if (dirs.d.empty()) return {};
  std::vector<at::Tensor> all = dirs.d;
  all.insert(all.end(), dirs.w.begin(), dirs.w.end());
  std::vector<double> norms = Norms(all);
  const size_t n = dirs.d.size();
  double update_sq = 0, weight_sq = 0;
  for (size_t i = 0; i < n; ++i) {
    update_sq += dirs.lr[i] * dirs.lr[i] * norms[i] * norms[i];
    weight_sq += norms[n + i] * norms[n + i];
  }
  UpdateSize out;
  out.update_norm = std::sqrt(update_sq);
  out.weight_norm = std::sqrt(weight_sq);
  out.ratio = out.weight_norm > 0 ? out.update_norm / out.weight_norm : NAN;
  return out;
}

}  // namespace gradwatch::torchmon
