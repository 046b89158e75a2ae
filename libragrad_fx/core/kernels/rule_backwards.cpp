// Fused CPU backwards of two LibraGrad rules, each one pass over memory where the unfused torch
// expression makes three:
//
//   gelu_gate_backward(grad, x)          grad * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2: GELU's gate,
//                                        computed as the GELU forward kernel computes it
//   layer_norm_rule_dx(grad, weight, rstd)
//                                        rstd * (g - mean(g)), g = grad * weight, per row: LayerNorm's
//                                        backward with the standard deviation detached
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
void rule_dx_rows(const T* grad, const T* weight, const T* rstd, T* out, int64_t rows, int64_t n) {
  using Vec = at::vec::Vectorized<T>;
  at::parallel_for(0, rows, 1 + (1 << 14) / std::max<int64_t>(n, 1), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* g = grad + r * n;
      T* o = out + r * n;
      T mean;
      if (weight != nullptr) {
        // o = g * w first: the row is then read from cache for its mean and the final scale
        at::vec::map2([](Vec a, Vec b) { return a * b; }, o, g, weight, n);
        mean = at::vec::reduce_all<T>([](Vec a, Vec b) { return a + b; }, o, n) / static_cast<T>(n);
        const T s = rstd[r];
        at::vec::map([=](Vec a) { return (a - Vec(mean)) * Vec(s); }, o, o, n);
      } else {
        mean = at::vec::reduce_all<T>([](Vec a, Vec b) { return a + b; }, g, n) / static_cast<T>(n);
        const T s = rstd[r];
        at::vec::map([=](Vec a) { return (a - Vec(mean)) * Vec(s); }, o, g, n);
      }
    }
  });
}

// grad: (rows, n); weight: (n) or undefined; rstd: rows values
at::Tensor layer_norm_rule_dx(const at::Tensor& grad, const std::optional<at::Tensor>& weight, const at::Tensor& rstd) {
  TORCH_CHECK(grad.device().is_cpu() && grad.dim() == 2, "layer_norm_rule_dx: grad must be a 2-d CPU tensor");
  const int64_t rows = grad.size(0), n = grad.size(1);
  TORCH_CHECK(rstd.numel() == rows, "layer_norm_rule_dx: one rstd per row expected");
  const bool affine = weight.has_value() && weight->defined();
  TORCH_CHECK(!affine || weight->numel() == n, "layer_norm_rule_dx: weight must have one value per column");
  const at::Tensor g = grad.contiguous();
  const at::Tensor s = rstd.to(grad.scalar_type()).contiguous();
  const at::Tensor w = affine ? weight->to(grad.scalar_type()).contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(g, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "layer_norm_rule_dx", [&] {
    rule_dx_rows<scalar_t>(g.const_data_ptr<scalar_t>(), affine ? w.const_data_ptr<scalar_t>() : nullptr,
                           s.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), rows, n);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gelu_gate_backward", &gelu_gate_backward, "grad * Phi(x): the GELU rule's backward in one pass");
  m.def("layer_norm_rule_dx", &layer_norm_rule_dx, "LayerNorm's input gradient with the standard deviation detached");
}
