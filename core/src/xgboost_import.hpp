// Internal to flock_core: the XGBoost importer (xgboost_read.cpp reads the JSON, xgboost_import.cpp
// encodes it as ONNX) and its fast route for Model::load.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/onnx.hpp"
#include "kernels/ml_tree.hpp"

namespace flock {

// An XGBoost model as read from its JSON (xgboost_read.cpp), validated: what the ONNX encoding
// (xgboost_import.cpp) needs.
struct XGBoostTrees {
  bool regressor = false;  // reg:squarederror / reg:logistic
  bool reg_logistic = false;
  int64_t num_feature = 0;
  int64_t n_classes = 0;  // classifiers
  std::string producer_version;
  std::vector<std::string> feature_names;
  std::vector<int64_t> tree_info;
  std::vector<float> base_values;
  // The trees exactly as the TreeEnsemble kernel compiles them from the attributes
  // add_tree_attrs writes: nodes in pre-order per tree (XGBoost's left child, the true side of
  // BRANCH_LT, right after its parent), trees one after another, a leaf's weights in attribute
  // order and its threshold slot holding its first weight.
  tree::Ensemble e;
  // Two-class models without a negative leaf: every leaf of the first tree also has a 0 weight
  // for class 1 (second in its weight list, last in the attributes).
  bool class1_zeros = false;
};

// Reads and validates XGBoost JSON; throws flock::Error (InvalidModel, UnsupportedOperator,
// LimitExceeded) naming the path of what is wrong.
XGBoostTrees read_xgboost_json(std::span<const uint8_t> bytes);

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
