// Op schemas of the relkd library and the Python module init (pattern of pytorch/extension-cpp).
#include <Python.h>

#include <ATen/Parallel.h>

#include "cpu/isa.h"
#include "relkd.h"

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
#ifdef RELKD_WITH_CUDA
  PyModule_AddIntConstant(module, "with_cuda", 1);
#else
  PyModule_AddIntConstant(module, "with_cuda", 0);
#endif
  // Whether this extension's own at::parallel_for runs in parallel (it is a header template: without
  // OpenMP at compile time it silently runs every CPU kernel on one thread).
#ifdef INTRA_OP_PARALLEL
  PyModule_AddIntConstant(module, "with_openmp", 1);
#else
  PyModule_AddIntConstant(module, "with_openmp", 0);
#endif
  // The widest build of the CPU kernels this CPU runs (csrc/cpu/isa.h), what RELKD_CPU_ISA=auto picks.
  PyModule_AddStringConstant(module, "cpu_kernels", relkd::cpu_isa_name(relkd::widest_cpu_isa()));
  return module;
}
}

TORCH_LIBRARY(relkd, m) {
  // Every forward returns the loss plus what its backward needs (small: C×C matrices, counts).
  m.def("gram_loss(Tensor fs, Tensor ft, bool check_finite) -> (Tensor, Tensor)");
  m.def("gram_loss_backward(Tensor grad, Tensor fs, Tensor ft, Tensor diff, bool[2] output_mask) -> (Tensor, Tensor)");
  m.def(
      "affinity_loss(Tensor fs, Tensor ft, Tensor? labels, int num_classes, float intra_weight, "
      "float inter_weight, float eps, bool check_finite) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "affinity_loss_backward(Tensor grad, Tensor fs, Tensor ft, Tensor? labels, Tensor s1, Tensor s2, "
      "Tensor s3, Tensor counts, float intra_weight, float inter_weight, float eps, bool[2] output_mask) "
      "-> (Tensor, Tensor)");
  m.def("kd_logits_loss(Tensor zs, Tensor zt, float temperature, bool check_finite) -> Tensor");
  m.def(
      "kd_logits_loss_backward(Tensor grad, Tensor zs, Tensor zt, float temperature, bool[2] output_mask) "
      "-> (Tensor, Tensor)");
  // stats: float64 [B, C, 3] per (sample, channel) row: lse_s, lse_t (log-sum-exp of y/τ) and the row's KL.
  m.def("cwd_loss(Tensor ys, Tensor yt, float temperature, bool check_finite) -> (Tensor, Tensor)");
  m.def(
      "cwd_loss_backward(Tensor grad, Tensor ys, Tensor yt, Tensor stats, float temperature, bool[2] output_mask) "
      "-> (Tensor, Tensor)");
  // grad_mask: the gradients (w.r.t. fs, ft, per unit upstream gradient) this call forms along with the loss,
  // returned third and fourth; a side not asked for comes back as an empty [0] tensor. The backward op serves
  // a side the forward did not form (relkd_bench/ops/relation_kl.py).
  m.def(
      "relation_kl_loss(Tensor fs, Tensor ft, float temperature, float eps, bool check_finite, "
      "bool[2] grad_mask=[False, False]) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "relation_kl_loss_backward(Tensor grad, Tensor fs, Tensor ft, Tensor stats, float temperature, float eps, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
}
