// Internal to flock_core: the XGBoost importer's fast route for Model::load.
#pragma once

#include <cstdint>
#include <map>
#include <span>

#include "flock/kernel.hpp"
#include "flock/onnx.hpp"

namespace flock {

// A model whose heavy nodes the importer compiled itself.
struct CompiledImport {
  // The graph, with every node, input, output, opset and metadata entry; a node listed in
  // `kernels` keeps its small attributes (labels, base values, transform) but not the
  // per-tree-node ones.
  onnx::ModelProto model;
  // Per node index: builds that node's kernel (instead of the registry's factory), once.
  std::map<int, KernelFactory> kernels;
};

// The same model as import_xgboost_json, with the trees handed to the TreeEnsemble kernel
// directly rather than as ONNX attributes (which a 1,000-tree model would spend most of its load
// time building and reading back). Same validation, same errors, same predictions.
CompiledImport import_xgboost_compiled(std::span<const uint8_t> bytes);

}  // namespace flock
