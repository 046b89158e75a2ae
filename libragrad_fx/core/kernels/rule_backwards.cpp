// Fused CPU backwards of two LibraGrad rules, each one pass over memory where the unfused torch
// expressions make several:
//
//   gelu_gate_backward(grad, x)          grad * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2: GELU's gate,
//                                        computed as the GELU forward kernel computes it
//   layer_norm_rule_backward(grad, x, mean, rstd, weight, ...)
//                                        dx = rstd * (g - mean(g)), g = grad * weight, per row, with dw
//                                        and db from the same sweep: LayerNorm's backward with the
//                                        standard deviation detached
//
// Built on demand by libragrad_fx.core.kernels with the CPU capability torch dispatches to, so the
// vector code is the one torch's own kernels use (ATen's Vectorized erf, FMA where torch has it).
#include <torch/extension.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/cpu/Loops.h>

#include <cmath>

namespace {

at::Tensor gelu_gate_backward(const at::Tensor& grad, const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && grad.device().is_cpu(), "gelu_gate_backward: CPU tensors only");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "gelu_gate_backward: grad and x differ in dtype");
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  auto iter = at::TensorIteratorConfig().add_output(out).add_const_input(grad).add_const_input(x).build();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gelu_gate_backward", [&] {
    using Vec = at::vec::Vectorized<scalar_t>;
    const scalar_t alpha = static_cast<scalar_t>(M_SQRT1_2);
    const scalar_t half = static_cast<scalar_t>(0.5);
    const scalar_t one = static_cast<scalar_t>(1);
    at::native::cpu_kernel_vec(
        iter,
        [=](scalar_t g, scalar_t v) -> scalar_t { return g * (half * (one + std::erf(v * alpha))); },
        [=](Vec g, Vec v) -> Vec { return g * (Vec(half) * (Vec(one) + (v * Vec(alpha)).erf())); });
  });
  return out;
}

template <typename T>
struct RuleRows {
  const T* grad;
  const T* x;       // null unless dw is wanted
  const T* mean;    // null unless dw is wanted
  const T* rstd;
  const T* weight;  // null without an affine weight
  T* dx;            // null unless dx is wanted
  T* partial;       // per thread: dw (n values) then db (n values); null unless either is wanted
  bool want_db;
  int64_t n;

  // One row: sum(g * w) from the first sweep, then dx and the row's share of dw and db in the second,
  // while the row is still in cache. The flags are template arguments so that each combination is a
  // loop without branches.
  template <bool DX, bool DW, bool DB>
  void row(int64_t r, T* dw_acc, T* db_acc) const {
    using Vec = at::vec::Vectorized<T>;
    constexpr int64_t K = Vec::size();
    const T* g = grad + r * n;
    T m = 0;
    if constexpr (DX) {
      m = weight != nullptr
              ? at::vec::map2_reduce_all<T>([](Vec a, Vec b) { return a * b; }, [](Vec a, Vec b) { return a + b; },
                                            g, weight, n)
              : at::vec::reduce_all<T>([](Vec a, Vec b) { return a + b; }, g, n);
      m /= static_cast<T>(n);
    }
    const T* xr = DW ? x + r * n : nullptr;
    T* o = DX ? dx + r * n : nullptr;
    const Vec vm(m), vs(rstd[r]), vmu(DW ? mean[r] : T(0));
    const auto step = [&](int64_t i, Vec gv, auto load, auto store) {
      if constexpr (DX) {
        const Vec gw = weight != nullptr ? gv * load(weight + i) : gv;
        store((gw - vm) * vs, o + i);
      }
      if constexpr (DW) store(at::vec::fmadd(gv, (load(xr + i) - vmu) * vs, load(dw_acc + i)), dw_acc + i);
      if constexpr (DB) store(load(db_acc + i) + gv, db_acc + i);
    };
    int64_t i = 0;
    for (; i + K <= n; i += K) {
      step(i, Vec::loadu(g + i), [](const T* p) { return Vec::loadu(p); }, [](Vec v, T* p) { v.store(p); });
    }
    if (i < n) {
      const int64_t c = n - i;
      step(i, Vec::loadu(g + i, c), [c](const T* p) { return Vec::loadu(p, c); },
           [c](Vec v, T* p) { v.store(p, c); });
    }
  }

  template <bool DX, bool DW, bool DB>
  void run_rows(int64_t rows) const {
    at::parallel_for(0, rows, 1 + (1 << 14) / std::max<int64_t>(n, 1), [&](int64_t begin, int64_t end) {
      T* dw_acc = partial != nullptr ? partial + at::get_thread_num() * 2 * n : nullptr;
      T* db_acc = dw_acc != nullptr ? dw_acc + n : nullptr;
      for (int64_t r = begin; r < end; ++r) row<DX, DW, DB>(r, dw_acc, db_acc);
    });
  }

  void run(int64_t rows) const {
    // the eight combinations of (dx, dw, db), each its own loop
    const int which = (dx != nullptr ? 4 : 0) | (x != nullptr ? 2 : 0) | (want_db ? 1 : 0);
    switch (which) {
      case 7: return run_rows<true, true, true>(rows);
      case 6: return run_rows<true, true, false>(rows);
      case 5: return run_rows<true, false, true>(rows);
      case 4: return run_rows<true, false, false>(rows);
      case 3: return run_rows<false, true, true>(rows);
      case 2: return run_rows<false, true, false>(rows);
      case 1: return run_rows<false, false, true>(rows);
      default: return;
    }
  }
};

// LayerNorm's backward with the standard deviation detached, in one pass over grad (and x for dw):
//   dx = rstd * (g - mean(g)), g = grad * weight;  dw = sum over rows of grad * (x - mean) * rstd;
//   db = sum over rows of grad.
// grad, x: (rows, n); mean, rstd: rows values; weight: n values or absent. Returns the wanted ones
// (an undefined tensor for the others).
std::tuple<at::Tensor, at::Tensor, at::Tensor> layer_norm_rule_backward(
    const at::Tensor& grad, const std::optional<at::Tensor>& x, const std::optional<at::Tensor>& mean,
    const at::Tensor& rstd, const std::optional<at::Tensor>& weight, bool want_dx, bool want_dw, bool want_db) {
  TORCH_CHECK(grad.device().is_cpu() && grad.dim() == 2, "layer_norm_rule_backward: grad must be a 2-d CPU tensor");
  const int64_t rows = grad.size(0), n = grad.size(1);
  const auto type = grad.scalar_type();
  TORCH_CHECK(rstd.numel() == rows, "layer_norm_rule_backward: one rstd per row expected");
  const bool affine = weight.has_value() && weight->defined();
  TORCH_CHECK(!affine || weight->numel() == n, "layer_norm_rule_backward: weight must have one value per column");
  TORCH_CHECK(!want_dw || (x.has_value() && x->defined() && x->numel() == grad.numel() && mean.has_value() &&
                           mean->defined() && mean->numel() == rows),
              "layer_norm_rule_backward: dw needs x shaped like grad and one mean per row");
  const at::Tensor g = grad.contiguous();
  const at::Tensor s = rstd.to(type).contiguous();
  const at::Tensor w = affine ? weight->to(type).contiguous() : at::Tensor();
  const at::Tensor xs = want_dw ? x->to(type).reshape({rows, n}).contiguous() : at::Tensor();
  const at::Tensor mu = want_dw ? mean->to(type).contiguous() : at::Tensor();
  at::Tensor dx = want_dx ? at::empty_like(g, at::MemoryFormat::Contiguous) : at::Tensor();
  at::Tensor partial = (want_dw || want_db) ? at::zeros({at::get_num_threads(), 2, n}, g.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(type, "layer_norm_rule_backward", [&] {
    RuleRows<scalar_t>{g.const_data_ptr<scalar_t>(),
                       want_dw ? xs.const_data_ptr<scalar_t>() : nullptr,
                       want_dw ? mu.const_data_ptr<scalar_t>() : nullptr,
                       s.const_data_ptr<scalar_t>(),
                       affine ? w.const_data_ptr<scalar_t>() : nullptr,
                       want_dx ? dx.mutable_data_ptr<scalar_t>() : nullptr,
                       partial.defined() ? partial.mutable_data_ptr<scalar_t>() : nullptr,
                       want_db, n}
        .run(rows);
  });
  at::Tensor dw, db;
  if (partial.defined()) {
    const at::Tensor totals = partial.sum(0);  // the threads' shares
    if (want_dw) dw = totals.select(0, 0);
    if (want_db) db = totals.select(0, 1);
  }
  return {dx, dw, db};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gelu_gate_backward", &gelu_gate_backward, "grad * Phi(x): the GELU rule's backward in one pass");
  m.def("layer_norm_rule_backward", &layer_norm_rule_backward,
        "LayerNorm's dx, dw, db with the standard deviation detached, in one pass");
}
