// A fully connected layer (ONNX Gemm with constant weights and bias, optionally followed by Relu)
// run as one oneDNN inner-product primitive: the weights are reordered once into the layout
// oneDNN's kernel for this CPU wants and the bias is added as the product is written, instead of a
// GEMM that repacks the weights on every call; the Relu runs on each block while it is in cache.
// model.cpp builds it when the graph allows (dense_layer_fusable); anything it cannot run (a double
// input, a shape it did not expect, oneDNN declining) goes through the generic Gemm it wraps.
#pragma once

#include <memory>

#include "flock/kernel.hpp"
#include "flock/tensor.hpp"

namespace flock::kernels {

// Whether a Gemm node with these attributes and constant inputs B and C (c may be nullptr) can
// become a dense layer: float weights, transA = 0, a bias that broadcasts along the rows, and an
// output width where the primitive beats a plain GEMM.
bool dense_layer_fusable(const Attrs& gemm_attrs, const Tensor& b, const Tensor* c);

// `generic` is the Gemm kernel for the same node (the fallback); `relu` folds a following Relu.
std::unique_ptr<Kernel> make_dense_layer(const Attrs& gemm_attrs, const Tensor& b, const Tensor* c,
                                         std::shared_ptr<const Kernel> generic, bool relu);

}  // namespace flock::kernels
