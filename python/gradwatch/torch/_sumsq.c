/* Sums of squares for gradwatch.torch's per-step measurement of CPU tensors (native.py): one
 * call for all of a step's tensors, where LibTorch 1.13 runs a kernel per tensor per op.
 *
 * Every array is contiguous and of the element type the function's suffix names (f32: float,
 * f64: double); arrays are passed as tables of addresses, one per tensor, with len[t] elements
 * each. A table of 0 means that term is absent. Sums are accumulated in double, in four
 * independent partial sums (one chain would wait on each add's latency); NaN and Inf
 * propagate. No allocation, no state, no error path. */
#include <math.h>
#include <stdint.h>

#define AT(T, table, t) ((table) ? (const T*)(uintptr_t)(table)[t] : (const T*)0)

/* s[0..3] += VALUE(i)^2 over i in [0, m), VALUE an expression of i. */
#define SUM_SQUARES(m, s, VALUE)                                                                  \
  do {                                                                                            \
    int64_t i = 0;                                                                                \
    for (; i + 4 <= (m); i += 4) {                                                                \
      for (int k_ = 0; k_ < 4; ++k_) {                                                            \
        double v_ = VALUE(i + k_);                                                                \
        (s)[k_] += v_ * v_;                                                                       \
      }                                                                                           \
    }                                                                                             \
    for (; i < (m); ++i) {                                                                        \
      double v_ = VALUE(i);                                                                       \
      (s)[0] += v_ * v_;                                                                          \
    }                                                                                             \
  } while (0)

#define TOTAL(s) (((s)[0] + (s)[1]) + ((s)[2] + (s)[3]))

/* The element of each kernel, with the kernel's arrays and coefficients in scope; SGD's once
 * for each combination of terms present, so that no loop tests for them. */
#define PLAIN(i) ((double)a[i])
#define SGD(i) ((double)gt[i] + cw * wt[i] + cb * bt[i])
#define SGD_W(i) ((double)gt[i] + cw * wt[i])
#define SGD_B(i) ((double)gt[i] + cb * bt[i])
#define SGD_G(i) ((double)gt[i])
#define ADAM(i) \
  _Generic(gt, const float*: adam_f32, const double*: adam_f64)(gt, wt, mt, vt, xt, i, cw, cm, cv, kmax, eps)

#define ADAM_ELEMENT(T, SUFFIX)                                                                    \
  /* One element of Adam's direction M / (sqrt(V) + eps), with u = g + cw*w, M = m + cm*u (u     \
   * without m), V = v + cv*u^2 (u^2 without v), then V = max(V, kmax*vmax) with vmax (amsgrad;  \
   * NaN propagates, as in torch.maximum). */                                                     \
  static inline double adam_##SUFFIX(const T* gt, const T* wt, const T* mt, const T* vt,          \
                                     const T* xt, int64_t i, double cw, double cm, double cv,     \
                                     double kmax, double eps) {                                   \
    double u = (double)gt[i] + (wt ? cw * wt[i] : 0.0);                                           \
    double mm = mt ? mt[i] + cm * u : u;                                                          \
    double vv = vt ? vt[i] + cv * u * u : u * u;                                                  \
    if (xt) {                                                                                     \
      double x = kmax * xt[i];                                                                    \
      if (x > vv || isnan(x)) vv = x;                                                             \
    }                                                                                             \
    return mm / (sqrt(vv) + eps);                                                                 \
  }

ADAM_ELEMENT(float, f32)
ADAM_ELEMENT(double, f64)

#define DEFINE(T, SUFFIX)                                                                         \
  /* out[t] = sum of x_t[i]^2, for each of the n tensors. */                                      \
  void gw_sumsq_##SUFFIX(int64_t n, const uint64_t* x, const int64_t* len, double* out) {         \
    for (int64_t t = 0; t < n; ++t) {                                                             \
      const T* a = AT(T, x, t);                                                                   \
      double s[4] = {0, 0, 0, 0};                                                                 \
      SUM_SQUARES(len[t], s, PLAIN);                                                              \
      out[t] = TOTAL(s);                                                                          \
    }                                                                                             \
  }                                                                                               \
                                                                                                  \
  /* Sum over the tensors of ||g + cw*w + cb*b||^2 (SGD's direction; w, b may be absent). */      \
  double gw_sgd_sumsq_##SUFFIX(int64_t n, const uint64_t* g, const uint64_t* w,                   \
                               const uint64_t* b, const int64_t* len, double cw, double cb) {     \
    double s[4] = {0, 0, 0, 0};                                                                   \
    for (int64_t t = 0; t < n; ++t) {                                                             \
      const T *gt = AT(T, g, t), *wt = AT(T, w, t), *bt = AT(T, b, t);                            \
      if (wt && bt) {                                                                             \
        SUM_SQUARES(len[t], s, SGD);                                                              \
      } else if (bt) {                                                                            \
        SUM_SQUARES(len[t], s, SGD_B);                                                            \
      } else if (wt) {                                                                            \
        SUM_SQUARES(len[t], s, SGD_W);                                                            \
      } else {                                                                                    \
        SUM_SQUARES(len[t], s, SGD_G);                                                            \
      }                                                                                           \
    }                                                                                             \
    return TOTAL(s);                                                                              \
  }                                                                                               \
                                                                                                  \
  /* Sum over the tensors of ||adam_<suffix>(...)||^2. */                                                 \
  double gw_adam_sumsq_##SUFFIX(int64_t n, const uint64_t* g, const uint64_t* w,                  \
                                const uint64_t* m, const uint64_t* v, const uint64_t* vmax,       \
                                const int64_t* len, double cw, double cm, double cv,              \
                                double kmax, double eps) {                                        \
    double s[4] = {0, 0, 0, 0};                                                                   \
    for (int64_t t = 0; t < n; ++t) {                                                             \
      const T *gt = AT(T, g, t), *wt = AT(T, w, t), *mt = AT(T, m, t), *vt = AT(T, v, t),         \
              *xt = AT(T, vmax, t);                                                               \
      SUM_SQUARES(len[t], s, ADAM);                                                               \
    }                                                                                             \
    return TOTAL(s);                                                                              \
  }

DEFINE(float, f32)
DEFINE(double, f64)
