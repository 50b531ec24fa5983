// XGBoost JSON (gbtree) -> ONNX-ML TreeEnsemble model: the encoding of the trees xgboost_read.cpp read.
//
// Encoding (checked against ONNX Runtime's TreeEnsemble semantics, which Flock's kernels follow):
//   reg:squarederror  TreeEnsembleRegressor(NONE, base_values=[base_score]) -> "variable"
//   reg:logistic      TreeEnsembleRegressor(NONE, base_values=[logit(base_score)]) -> Sigmoid ->
//                     "variable". (ORT ignores post_transform LOGISTIC on a single-target
//                     regressor, so the sigmoid is a separate standard node.)
//   binary:logistic   TreeEnsembleClassifier(LOGISTIC), labels [0, 1], every leaf weight on class 0
//                     and base_values=[logit(base_score)]: ORT's binary single-score case, which
//                     gives probabilities [1 - p, p] and label 1 iff the margin is > 0.
//                     If no leaf weight is negative, ORT's single-score case would skip the
//                     sigmoid ("all weights positive" rule); then class 1 also gets a 0 weight on
//                     every leaf of the first tree and base_values=[m, m], which ORT turns into
//                     scores [-margin, margin] -> the same [1 - p, p] and label.
//   multi:softprob / multi:softmax with num_class >= 3
//                     TreeEnsembleClassifier(SOFTMAX), class_ids = tree_info,
//                     base_values = [base_score] * num_class.
//   multi:* with num_class == 2
//                     the binary encoding on margin1 - margin0 (class-0 trees negated), since
//                     softmax of two margins is the logistic of their difference and ORT's
//                     two-class rules would otherwise drop the class-1 sum.
//
// Two outputs share one parse: import_xgboost_json emits the tree ensemble as standard ONNX
// attributes; import_xgboost_compiled (Model::load's route) hands the same ensemble to the kernel
// as arrays, because a 1,000-tree model has ~350,000 nodes and the attribute form (a string per
// node mode, id lookups through a hash map) dominated its load time. Reading the JSON is
// xgboost_read.cpp's.
#include "xgboost_import.hpp"

#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "flock/importers.hpp"
#include "kernels/ml_tree.hpp"

namespace flock {
namespace {

// ---------------------------------------------------------------------------------------------
// ONNX building helpers

template <typename V>
void attr_ints(onnx::NodeProto* n, const char* name, const V& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  a->mutable_ints()->Reserve(static_cast<int>(v.size()));
  for (auto x : v) a->add_ints(static_cast<int64_t>(x));
}

void attr_floats(onnx::NodeProto* n, const char* name, const std::vector<float>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  a->mutable_floats()->Reserve(static_cast<int>(v.size()));
  for (float x : v) a->add_floats(x);
}

void attr_int(onnx::NodeProto* n, const char* name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void attr_string(onnx::NodeProto* n, const char* name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

// dims: -1 stands for the batch dimension "N".
void value_info(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem, const std::vector<int64_t>& dims) {
  vi->set_name(name);
  auto* tt = vi->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(elem);
  auto* shape = tt->mutable_shape();
  for (int64_t d : dims) {
    auto* dim = shape->add_dim();
    if (d < 0) dim->set_dim_param("N");
    else dim->set_dim_value(d);
  }
}

// The per-tree-node attributes (nodes_* and the leaf weights) of the parsed ensemble.
void add_tree_attrs(onnx::NodeProto* node, const XGBoostTrees& p) {
  const tree::Ensemble& e = p.e;
  const size_t n = e.nodes_f.size();
  std::vector<int64_t> treeids(n), nodeids(n), featureids(n), trueids(n), falseids(n), missing(n);
  std::vector<float> values(n);
  std::vector<int64_t> w_ids, w_nodes, w_trees;
  std::vector<float> w_vals;
  for (size_t t = 0; t < e.roots.size(); ++t) {
    const int32_t root = e.roots[t];
    const int32_t end = t + 1 < e.roots.size() ? e.roots[t + 1] : static_cast<int32_t>(n);
    for (int32_t i = root; i < end; ++i) {
      const tree::Node<float>& nd = e.nodes_f[static_cast<size_t>(i)];
      const size_t k = static_cast<size_t>(i);
      treeids[k] = static_cast<int64_t>(t);
      nodeids[k] = i - root;
      if (nd.mode == tree::kLeaf) {
        const size_t w = static_cast<size_t>(e.leaf_first[k]);
        w_ids.push_back(e.w_id[w]);
        w_nodes.push_back(i - root);
        w_trees.push_back(static_cast<int64_t>(t));
        w_vals.push_back(static_cast<float>(e.w_value[w]));
      } else {
        featureids[k] = nd.feature;
        values[k] = nd.threshold;
        trueids[k] = nd.yes - root;
        falseids[k] = nd.no - root;
        missing[k] = nd.missing_true;
      }
    }
  }
  if (p.class1_zeros) {  // the second weight of the first tree's leaves, after all the others
    const int32_t end = e.roots.size() > 1 ? e.roots[1] : static_cast<int32_t>(n);
    for (int32_t i = 0; i < end; ++i) {
      if (e.nodes_f[static_cast<size_t>(i)].mode != tree::kLeaf) continue;
      const size_t w = static_cast<size_t>(e.leaf_first[static_cast<size_t>(i)]) + 1;
      w_ids.push_back(e.w_id[w]);
      w_nodes.push_back(i);
      w_trees.push_back(0);
      w_vals.push_back(static_cast<float>(e.w_value[w]));
    }
  }
  attr_ints(node, "nodes_treeids", treeids);
  attr_ints(node, "nodes_nodeids", nodeids);
  attr_ints(node, "nodes_featureids", featureids);
  auto* modes = node->add_attribute();
  modes->set_name("nodes_modes");
  modes->set_type(onnx::AttributeProto::STRINGS);
  modes->mutable_strings()->Reserve(static_cast<int>(n));
  for (size_t i = 0; i < n; ++i) modes->add_strings(e.nodes_f[i].mode == tree::kLeaf ? "LEAF" : "BRANCH_LT");
  attr_floats(node, "nodes_values", values);
  attr_ints(node, "nodes_truenodeids", trueids);
  attr_ints(node, "nodes_falsenodeids", falseids);
  attr_ints(node, "nodes_missing_value_tracks_true", missing);
  const std::string pre = p.regressor ? "target" : "class";
  attr_ints(node, (pre + "_ids").c_str(), w_ids);
  attr_ints(node, (pre + "_nodeids").c_str(), w_nodes);
  attr_ints(node, (pre + "_treeids").c_str(), w_trees);
  attr_floats(node, (pre + "_weights").c_str(), w_vals);
}

// The ONNX model; with `tree_attrs` false the tree node carries only its small attributes.
onnx::ModelProto build_model(const XGBoostTrees& p, bool tree_attrs) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("xgboost");
  m.set_producer_version(p.producer_version);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(15);
  opset = m.add_opset_import();
  opset->set_domain("ai.onnx.ml");
  opset->set_version(3);
  if (!p.feature_names.empty()) {
    auto* prop = m.add_metadata_props();
    prop->set_key("feature_names");
    prop->set_value(nlohmann::json(p.feature_names).dump());
  }

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("xgboost");
  value_info(g->add_input(), "input", onnx::TensorProto::FLOAT, {-1, p.num_feature});

  onnx::NodeProto* node = g->add_node();
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  node->set_name("xgboost_trees");

  if (p.regressor) {
    node->set_op_type("TreeEnsembleRegressor");
    node->add_output(p.reg_logistic ? "margin" : "variable");
    if (tree_attrs) add_tree_attrs(node, p);
    attr_int(node, "n_targets", 1);
    attr_string(node, "aggregate_function", "SUM");
    attr_string(node, "post_transform", "NONE");
    attr_floats(node, "base_values", p.base_values);
    if (p.reg_logistic) {
      onnx::NodeProto* sig = g->add_node();
      sig->set_op_type("Sigmoid");
      sig->set_name("xgboost_sigmoid");
      sig->add_input("margin");
      sig->add_output("variable");
      // ONNX has no type inference for TreeEnsembleRegressor: declare the intermediate.
      value_info(g->add_value_info(), "margin", onnx::TensorProto::FLOAT, {-1, 1});
    }
    value_info(g->add_output(), "variable", onnx::TensorProto::FLOAT, {-1, 1});
    return m;
  }

  node->set_op_type("TreeEnsembleClassifier");
  node->add_output("label");
  node->add_output("probabilities");
  if (tree_attrs) add_tree_attrs(node, p);
  attr_floats(node, "base_values", p.base_values);
  attr_string(node, "post_transform", p.n_classes == 2 ? "LOGISTIC" : "SOFTMAX");
  std::vector<int64_t> labels(static_cast<size_t>(p.n_classes));
  for (int64_t k = 0; k < p.n_classes; ++k) labels[static_cast<size_t>(k)] = k;
  attr_ints(node, "classlabels_int64s", labels);

  value_info(g->add_output(), "label", onnx::TensorProto::INT64, {-1});
  value_info(g->add_output(), "probabilities", onnx::TensorProto::FLOAT, {-1, p.n_classes});
  return m;
}

}  // namespace

onnx::ModelProto import_xgboost_json(std::span<const uint8_t> bytes) { return build_model(read_xgboost_json(bytes), true); }

CompiledImport import_xgboost_compiled(std::span<const uint8_t> bytes) {
  XGBoostTrees p = read_xgboost_json(bytes);
  CompiledImport out;
  out.model = build_model(p, false);
  auto ensemble = std::make_shared<tree::Ensemble>(std::move(p.e));
  out.kernels[0] = [ensemble](const KernelContext& ctx) { return tree::make_tree_kernel(ctx, std::move(*ensemble)); };
  return out;
}

}  // namespace flock
