// Atelier's libtorch compatibility layer (tools/torch/README.md).
//
// tch 0.26 (torch-sys 0.26) is generated from PyTorch 2.13's op list. Older libtorch lacks a
// few of those ops, so torch-sys's C++ does not compile against its headers. A build against
// an older torch force-includes this file into that C++ (CXXFLAGS="-include …/compat.h"): it
// includes the real <torch/torch.h>, then declares each op the older headers lack as a stub
// that throws. A stub is only reached by a tch call of that op; Atelier makes none (none of
// these ops is in its exports either), so the rest of tch is untouched.
#pragma once
#if defined(__cplusplus) && __has_include(<torch/torch.h>)
#include <torch/torch.h>
#include <torch/headeronly/version.h>

#include <stdexcept>
#include <string>
#include <tuple>

#if TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 13
namespace torch {
namespace atelier_compat {
[[noreturn]] inline void missing(const char *op) {
  throw std::runtime_error(std::string("torch::") + op + " is not in libtorch " TORCH_VERSION
                           " (tch 0.26 expects 2.13)");
}
}  // namespace atelier_compat

// Ops added in PyTorch 2.12 or 2.13 (tch 0.26's generated bindings call them).
#define ATELIER_MISSING_OP(name)                                                   \
  template <typename... Args> at::Tensor name(Args &&...) {                        \
    atelier_compat::missing(#name);                                                \
  }
ATELIER_MISSING_OP(_flash_attention_forward_no_dropout_inplace)
ATELIER_MISSING_OP(_philox_key_fold_in)
ATELIER_MISSING_OP(_philox_key_split)
ATELIER_MISSING_OP(_philox_normal)
ATELIER_MISSING_OP(_philox_normal_)
ATELIER_MISSING_OP(_philox_normal_out)
ATELIER_MISSING_OP(_philox_uniform)
ATELIER_MISSING_OP(_philox_uniform_)
ATELIER_MISSING_OP(_philox_uniform_out)
ATELIER_MISSING_OP(_upsample_lanczos2d_aa)
ATELIER_MISSING_OP(_upsample_lanczos2d_aa_backward)
ATELIER_MISSING_OP(_upsample_lanczos2d_aa_backward_out)
ATELIER_MISSING_OP(_upsample_lanczos2d_aa_out)
#undef ATELIER_MISSING_OP

// 2.13 added `enable_gqa` to this MPS-only op; declared here, it hides the older signature
// from `torch::` lookups, so tch's 2.13-style call compiles and throws if ever made.
template <typename... Args>
std::tuple<at::Tensor, at::Tensor> _scaled_dot_product_attention_math_for_mps(Args &&...) {
  atelier_compat::missing("_scaled_dot_product_attention_math_for_mps");
}
}  // namespace torch
#endif
#endif  // __cplusplus && <torch/torch.h>
