// Default-domain (ai.onnx) shape, indexing and reduction operators, opsets 9-21 (and the newer
// input forms where they are a superset): Gather, GatherElements, Split, Slice, Transpose, Squeeze,
// Unsqueeze, Shape, Size, ConstantOfShape, Expand, Tile, Range, TopK, the Reduce family, Pad, OneHot,
// NonZero, CumSum, Resize.
//
// Element types: float, double, int64 (int32 and narrower integers arrive as int64), bool, and
// string where the operator is type-agnostic. Index arithmetic is flat, over precomputed per-axis
// offset tables ("axis maps"); nothing allocates per element.
//
// The operators live in one file per family (tensor_indexing, tensor_shape, tensor_slice_pad,
// tensor_reduce, tensor_resize) over the shared helpers of tensor_ops.hpp.
#include "tensor_ops.hpp"

namespace flock {

void register_tensor_kernels(KernelRegistry& r) {
  tensor_ops::register_indexing_kernels(r);
  tensor_ops::register_shape_kernels(r);
  tensor_ops::register_slice_pad_kernels(r);
  tensor_ops::register_reduction_kernels(r);
  tensor_ops::register_resize_kernels(r);
}

}  // namespace flock
