// Sums of squares for gradwatch.torch's per-step measurement of CPU tensors (native.py): the
// torch operators gradwatch::grad_stats, gradwatch::sgd_step_stats and gradwatch::adam_sumsq, one
// call for a whole list of a step's parameters, where LibTorch 1.13 runs a kernel per tensor per
// fused op.
//
// Operators, not a Python module: they take the parameters themselves (Tensor[]) and read their
// gradients here, so what a caller would otherwise do per tensor through the Python bindings
// (p.grad, and the checks of device, layout, dtype, contiguity and size: ~0.8 us a tensor) are
// field reads, and no pybind11 is needed.
//
// Each operator answers an empty list when a tensor does not qualify (not a dense contiguous CPU
// tensor of the first gradient's dtype, float32 or float64; a list of another length, or a tensor
// of another number of elements than its gradient): the caller then uses torch ops.
//
// Sums of squares. float32 tensors are summed in float, four lanes to a vector, over blocks of
// kBlock elements, each block's sums then added in double: about four times the speed of
// summing in double, with a relative error of ~1e-7 (the values are reported as float32). A
// block whose float sum falls outside [kLow, kHigh] (an element that overflowed or underflowed
// when squared, an all-zero block, NaN) is summed again in double, so that no value a double
// sum would give is lost. float64 tensors are summed in double. The order is fixed: the same
// inputs give the same bits. NaN and Inf propagate. The tensors are only read.
#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kBlock = 256;
constexpr double kLow = 1e-28, kHigh = 1e36;

// Four floats (GCC's and Clang's vector extension: one SSE register on x86-64, whatever the
// target has elsewhere).
using Vec4f = float __attribute__((vector_size(4 * sizeof(float))));

// What a kernel's `values` reads its arrays through: elements i..i+3 of float arrays as one
// vector, coefficients as floats...
struct FloatLanes {
  int64_t i;
  Vec4f operator()(const float* p) const {
    Vec4f v;
    std::memcpy(&v, p + i, sizeof v);
    return v;
  }
  static float c(double x) { return float(x); }
};

// ...or element i of an array, and coefficients, in double.
struct DoubleLane {
  int64_t i;
  template <typename T>
  double operator()(const T* p) const {
    return double(p[i]);
  }
  static double c(double x) { return x; }
};

// For each of the N values `values(lane)` gives for an element, the sum of its squares over the
// elements [begin, end), in double.
template <size_t N, typename Values>
std::array<double, N> InDouble(int64_t begin, int64_t end, const Values& values) {
  double acc[N][4] = {};  // four chains: one would wait on each add's latency
  int64_t i = begin;
  for (; i + 4 <= end; i += 4) {
    for (int k = 0; k < 4; ++k) {
      auto v = values(DoubleLane{i + k});
      for (size_t j = 0; j < N; ++j) acc[j][k] += v[j] * v[j];
    }
  }
  for (; i < end; ++i) {
    auto v = values(DoubleLane{i});
    for (size_t j = 0; j < N; ++j) acc[j][0] += v[j] * v[j];
  }
  std::array<double, N> out{};
  for (size_t j = 0; j < N; ++j) out[j] = (acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]);
  return out;
}

// As InDouble over [0, n), for arrays of T: in float blocks for float (see the top of the file).
template <typename T, size_t N, typename Values>
std::array<double, N> SumSquares(int64_t n, const Values& values) {
  if constexpr (!std::is_same_v<T, float>) {
    return InDouble<N>(0, n, values);
  } else {
    std::array<double, N> total{};
    for (int64_t begin = 0; begin < n; begin += kBlock) {
      const int64_t end = std::min(n, begin + kBlock);
      Vec4f acc[N][2] = {};
      int64_t i = begin;
      for (; i + 8 <= end; i += 8) {
        for (int k = 0; k < 2; ++k) {
          auto v = values(FloatLanes{i + 4 * k});
          for (size_t j = 0; j < N; ++j) acc[j][k] += v[j] * v[j];
        }
      }
      std::array<double, N> block = InDouble<N>(i, end, values);  // the last few
      bool exact = true;
      for (size_t j = 0; j < N; ++j) {
        Vec4f lanes = acc[j][0] + acc[j][1];
        float sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        exact = exact && sum >= kLow && sum <= kHigh;  // false for NaN
        block[j] += sum;
      }
      if (!exact) block = InDouble<N>(begin, end, values);
      for (size_t j = 0; j < N; ++j) total[j] += block[j];
    }
    return total;
  }
}

using Tensors = std::vector<at::Tensor>;

// The gradient autograd holds for a parameter (undefined when it has none), without the warning
// Tensor::grad() gives for a tensor that is not a leaf.
const at::Tensor& GradOf(const at::Tensor& p) { return p.unsafeGetTensorImpl()->grad(); }

bool HasGrad(const at::Tensor& p) { return p.defined() && GradOf(p).defined(); }

// Whether every tensor of `xs` is dense, contiguous, on the CPU and of `dtype`, and, with `like`,
// of as many elements as its counterpart there.
bool Usable(at::TensorList xs, c10::ScalarType dtype, const Tensors* like = nullptr) {
  for (size_t i = 0; i < xs.size(); ++i) {
    const at::Tensor& t = xs[i];
    if (!t.defined() || !t.is_cpu() || t.layout() != c10::kStrided || t.scalar_type() != dtype ||
        !t.is_contiguous() || (like && t.numel() != (*like)[i].numel())) {
      return false;
    }
  }
  return true;
}

// The kernels' element type: that of the first tensor of the first non-empty list, when it is
// float32 or float64.
c10::optional<c10::ScalarType> KernelType(std::initializer_list<const Tensors*> lists) {
  for (const Tensors* xs : lists) {
    if (xs->empty()) continue;
    c10::ScalarType t = xs->front().scalar_type();
    if (t != at::kFloat && t != at::kDouble) return c10::nullopt;
    return t;
  }
  return at::kFloat;  // nothing to read: any will do
}

// Calls body(T{}) with T the C++ type of `dtype` (float or double).
template <typename Body>
void ForType(c10::ScalarType dtype, Body body) {
  if (dtype == at::kFloat) {
    body(float{});
  } else {
    body(double{});
  }
}

template <typename T>
double SumOfSquares(const at::Tensor& x) {
  const T* a = x.data_ptr<T>();
  return SumSquares<T, 1>(x.numel(), [a](auto at) { return std::array{at(a)}; })[0];
}

// Turns out[0..n), the sums of squares of the layers' gradients (-1: none), into what is reported:
// each layer's norm rounded to float32 (-1 stays), and inserts after them the global norm, from
// the rounded norms.
void ToLayerNorms(std::vector<double>& out, size_t n) {
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    if (out[i] == -1.0) continue;
    out[i] = double(float(std::sqrt(out[i])));
    total += out[i] * out[i];
  }
  out.insert(out.begin() + n, std::sqrt(total));
}

// [the norm of each parameter's gradient as reported (float32), -1 for a parameter without one;
// the global norm; the sum of squares of the `weights` that have a gradient, all together].
std::vector<double> GradStats(at::TensorList params, at::TensorList weights) {
  Tensors grads, moved;  // the gradients; the weights that have one
  for (const auto& p : params) {
    if (HasGrad(p)) grads.push_back(GradOf(p));
  }
  for (const auto& w : weights) {
    if (HasGrad(w)) moved.push_back(w);
  }
  auto dtype = KernelType({&grads, &moved});
  if (!dtype || !Usable(grads, *dtype) || !Usable(moved, *dtype)) return {};
  std::vector<double> out;
  out.reserve(params.size() + 1);
  ForType(*dtype, [&](auto zero) {
    using T = decltype(zero);
    for (const auto& p : params) out.push_back(HasGrad(p) ? SumOfSquares<T>(GradOf(p)) : -1.0);
    double total = 0;
    for (const auto& w : moved) total += SumOfSquares<T>(w);
    out.push_back(total);
  });
  ToLayerNorms(out, params.size());
  return out;
}

// The sums of squares of a parameter's gradient g, of its weight w and of SGD's direction
// cg*g + cw*w + cb*b (b its momentum buffer; none: cb = 0), in one pass over the three.
template <typename T>
std::array<double, 3> SgdSums(const at::Tensor& p, const T* b, double cg, double cw, double cb) {
  const T *g = GradOf(p).template data_ptr<T>(), *w = p.template data_ptr<T>();
  auto sgd = [=](auto at) {
    auto gi = at(g), wi = at(w);
    return std::array{gi, wi, at.c(cg) * gi + at.c(cw) * wi + at.c(cb) * at(b)};
  };
  auto plain = [=](auto at) {
    auto gi = at(g), wi = at(w);
    return std::array{gi, wi, at.c(cg) * gi + at.c(cw) * wi};
  };
  return b ? SumSquares<T, 3>(p.numel(), sgd) : SumSquares<T, 3>(p.numel(), plain);
}

// Everything step_stats measures for torch.optim.SGD, in one pass over each parameter's gradient,
// weight and momentum buffer. layers: the layers, in report order (layers_are_moved: `moved`
// itself, the usual case, passed once). moved: every parameter of every group, group after group
// (group_sizes); coefficients: four per group, cg, cw, cb for the
// parameters with a buffer (direction cg*g + cw*w + cb*b) and cw0 for those without (g + cw0*w);
// state_keys and state_buffers: the optimizer's state, each parameter it holds and its momentum
// buffer (None: none). Returns [the norm of each layer's gradient as reported (float32), -1 for
// one without; the global norm; the sum of squares of the weights moved (those with a gradient);
// then per group, the direction's over the parameters with a buffer and over those without].
std::vector<double> SgdStepStats(at::TensorList layers, bool layers_are_moved, at::TensorList moved,
                                 at::IntArrayRef group_sizes, at::ArrayRef<double> coefficients,
                                 at::TensorList state_keys, const c10::List<c10::optional<at::Tensor>>& state_buffers) {
  const at::TensorList params = layers_are_moved ? moved : layers;
  const size_t groups = group_sizes.size();
  int64_t listed = 0;
  for (int64_t n : group_sizes) listed += n;
  if (state_buffers.size() != state_keys.size() || listed != int64_t(moved.size()) ||
      coefficients.size() != 4 * groups) {
    return {};
  }
  // Each parameter's buffer, found by identity among the state's keys: they are in the order
  // the optimizer first stepped the parameters, usually the groups' order, so the search
  // starts after the last one found.
  size_t next_key = 0;
  auto buffer = [&](const at::Tensor& p) -> c10::optional<at::Tensor> {
    for (size_t k = 0; k < state_keys.size(); ++k) {
      size_t j = (next_key + k) % state_keys.size();
      if (state_keys[j].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) {
        next_key = j + 1;
        return state_buffers.get(j);
      }
    }
    return c10::nullopt;
  };
  // Check every tensor read first: nothing is summed unless all of it can be.
  Tensors layer_grads, grads, weights, bufs;  // bufs: those present
  std::vector<c10::optional<at::Tensor>> buffer_of(moved.size());
  for (const auto& p : params) {
    if (HasGrad(p)) layer_grads.push_back(GradOf(p));
  }
  Tensors with_buffer_grads;
  for (size_t i = 0; i < moved.size(); ++i) {
    if (!HasGrad(moved[i])) continue;
    grads.push_back(GradOf(moved[i]));
    weights.push_back(moved[i]);
    buffer_of[i] = buffer(moved[i]);
    if (buffer_of[i] && buffer_of[i]->defined()) {
      bufs.push_back(*buffer_of[i]);
      with_buffer_grads.push_back(GradOf(moved[i]));
    } else {
      buffer_of[i] = c10::nullopt;
    }
  }
  auto dtype = KernelType({&grads, &layer_grads});
  if (!dtype || !Usable(layer_grads, *dtype) || !Usable(grads, *dtype) || !Usable(weights, *dtype, &grads) ||
      !Usable(bufs, *dtype, &with_buffer_grads)) {
    return {};
  }

  std::vector<double> out(params.size() + 1 + 2 * groups, 0.0);
  std::vector<bool> done(params.size(), false);
  ForType(*dtype, [&](auto zero) {
    using T = decltype(zero);
    size_t i = 0;
    for (size_t group = 0; group < groups; ++group) {
      const double cg = coefficients[4 * group], cw = coefficients[4 * group + 1], cb = coefficients[4 * group + 2],
                   cw0 = coefficients[4 * group + 3];
      for (int64_t end = i + group_sizes[group]; int64_t(i) < end; ++i) {
        const at::Tensor& p = moved[i];
        if (!HasGrad(p)) continue;
        const auto& b = buffer_of[i];
        auto [g, w, d] = b ? SgdSums<T>(p, b->template data_ptr<T>(), cg, cw, cb) : SgdSums<T>(p, nullptr, 1.0, cw0, 0.0);
        out[params.size() + (b ? 1 : 2) + 2 * group] += d;
        out[params.size()] += w;
        // The layer this parameter is, if it is one: itself when the layers are `moved`, else
        // found by a scan (a few dozen: cheap).
        for (size_t layer = layers_are_moved ? i : 0; layer < params.size(); ++layer) {
          if (!done[layer] && params[layer].unsafeGetTensorImpl() == p.unsafeGetTensorImpl()) {
            out[layer] = g;
            done[layer] = true;
            break;
          }
        }
      }
    }
    for (size_t layer = 0; layer < params.size(); ++layer) {  // layers no group moves
      if (!done[layer]) out[layer] = HasGrad(params[layer]) ? SumOfSquares<T>(GradOf(params[layer])) : -1.0;
    }
  });
  ToLayerNorms(out, params.size());
  return out;
}

// One element of Adam's direction M / (sqrt(V) + eps), with u = g + cw*w, M = m + cm*u (u without
// m), V = v + cv*u^2 (u^2 without v), then V = max(V, kmax*vmax) with vmax (amsgrad; NaN
// propagates, as in torch.maximum).
template <typename T>
struct AdamElement {
  const T *g, *w, *m, *v, *vmax;
  double cw, cm, cv, kmax, eps;

  double operator()(int64_t i) const {
    double u = double(g[i]) + (w ? cw * w[i] : 0.0);
    double mm = m ? m[i] + cm * u : u;
    double vv = v ? v[i] + cv * u * u : u * u;
    if (vmax) {
      double x = kmax * vmax[i];
      if (x > vv || std::isnan(x)) vv = x;
    }
    return mm / (std::sqrt(vv) + eps);
  }
};

Tensors Listed(const c10::optional<at::TensorList>& xs) {
  return xs ? Tensors(xs->begin(), xs->end()) : Tensors();
}

// [the sum over `params`, each with a gradient g, of ||AdamElement||^2]; m, v, vmax absent or
// one per parameter; the weights are read only when cw != 0.
std::vector<double> AdamSumSq(at::TensorList params, c10::optional<at::TensorList> m,
                              c10::optional<at::TensorList> v, c10::optional<at::TensorList> vmax, double cw,
                              double cm, double cv, double kmax, double eps) {
  Tensors g;
  for (const auto& p : params) {
    if (!HasGrad(p)) return {};
    g.push_back(GradOf(p));
  }
  const Tensors ms = Listed(m), vs = Listed(v), xs = Listed(vmax);
  auto dtype = KernelType({&g});
  if (!dtype || !Usable(g, *dtype) || !Usable(params, *dtype, &g)) return {};
  auto fits = [&](const Tensors& state) { return state.size() == g.size() && Usable(state, *dtype, &g); };
  if ((m && !fits(ms)) || (v && !fits(vs)) || (vmax && !fits(xs))) return {};
  double total = 0;
  ForType(*dtype, [&](auto zero) {
    using T = decltype(zero);
    auto data = [](const Tensors& xs, size_t t) { return xs.empty() ? nullptr : xs[t].data_ptr<T>(); };
    for (size_t t = 0; t < g.size(); ++t) {
      AdamElement<T> e{g[t].data_ptr<T>(), cw != 0 ? params[t].data_ptr<T>() : nullptr,
                       data(ms, t), data(vs, t), data(xs, t), cw, cm, cv, kmax, eps};
      total += InDouble<1>(0, g[t].numel(), [&e](DoubleLane at) { return std::array{e(at.i)}; })[0];
    }
  });
  return {total};
}

}  // namespace

TORCH_LIBRARY(gradwatch, m) {
  m.def("grad_stats(Tensor[] params, Tensor[] weights) -> float[]", &GradStats);
  m.def("sgd_step_stats(Tensor[] layers, bool layers_are_moved, Tensor[] moved, int[] group_sizes, "
        "float[] coefficients, Tensor[] state_keys, Tensor?[] state_buffers) -> float[]",
        &SgdStepStats);
  m.def("adam_sumsq(Tensor[] params, Tensor[]? m, Tensor[]? v, Tensor[]? vmax, float cw, float cm, float cv, "
        "float kmax, float eps) -> float[]",
        &AdamSumSq);
}
