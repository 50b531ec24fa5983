// Operator schemas for the opsets Debian's libonnx 1.12 predates (ai.onnx 18-21, ai.onnx.ml 4-5),
// registered into that library's schema registry so that its checker and shape inference check a
// newer model's nodes exactly as they check an older one's: arity, attribute names and types,
// element types, shapes. Written from the ONNX operator specification (docs/Operators.md,
// docs/Operators-ml.md) for the operators Flock runs whose definition changed in those opsets
// (onnx/defs/operator_sets*.h list them); check_operator_versions refuses every other operator that
// changed, naming it and the version.
//
// How a schema is made, by what changed:
//   * only element types Flock does not run were added (float8, int4...): the previous schema under
//     the new version (same checks for every type Flock runs; the new types are refused);
//   * inputs or attributes were added: the previous schema plus them, its shape inference kept
//     when the addition does not change shapes, else wrapped;
//   * a new signature (Reduce* with axes as an input, Mish, LabelEncoder 4, TreeEnsemble 5): a
//     schema of its own.
#include <fmt/format.h>
#include <onnx/defs/schema.h>
#include <onnx/defs/shape_inference.h>

#include <cmath>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "flock/error.hpp"
#include "flock/importers.hpp"
#include "flock/kernel.hpp"

namespace flock {

namespace {

using onnx::AttributeProto;
using onnx::InferenceContext;
using onnx::OpSchema;
using onnx::OpSchemaRegistry;
using onnx::TensorProto;

constexpr const char* kMl = "ai.onnx.ml";

// Every operator (domain "" or ai.onnx.ml) whose definition changed in ai.onnx 18-21 or
// ai.onnx.ml 4-5, with the versions it changed at (onnx/defs/operator_sets.h, operator_sets_ml.h).
struct Change {
  const char* domain;
  const char* op;
  int version;
};
constexpr Change kChanges[] = {
    {"", "Pad", 18}, {"", "CenterCropPad", 18}, {"", "Resize", 18}, {"", "Mish", 18},
    {"", "OptionalGetElement", 18}, {"", "OptionalHasElement", 18}, {"", "Split", 18}, {"", "Col2Im", 18},
    {"", "ScatterND", 18}, {"", "ScatterElements", 18}, {"", "ReduceSumSquare", 18}, {"", "ReduceLogSum", 18},
    {"", "ReduceLogSumExp", 18}, {"", "ReduceL1", 18}, {"", "ReduceL2", 18}, {"", "ReduceMax", 18},
    {"", "ReduceMin", 18}, {"", "ReduceMean", 18}, {"", "ReduceProd", 18}, {"", "BitwiseAnd", 18},
    {"", "BitwiseOr", 18}, {"", "BitwiseXor", 18}, {"", "BitwiseNot", 18}, {"", "GroupNormalization", 18},
    {"", "LpPool", 18}, {"", "Equal", 19}, {"", "AveragePool", 19}, {"", "Cast", 19}, {"", "CastLike", 19},
    {"", "Constant", 19}, {"", "DeformConv", 19}, {"", "DequantizeLinear", 19}, {"", "Identity", 19},
    {"", "If", 19}, {"", "Loop", 19}, {"", "Pad", 19}, {"", "QuantizeLinear", 19}, {"", "Resize", 19},
    {"", "Reshape", 19}, {"", "Scan", 19}, {"", "Shape", 19}, {"", "Size", 19}, {"", "AffineGrid", 20},
    {"", "ConstantOfShape", 20}, {"", "DFT", 20}, {"", "Gelu", 20}, {"", "GridSample", 20},
    {"", "ImageDecoder", 20}, {"", "IsInf", 20}, {"", "IsNaN", 20}, {"", "ReduceMax", 20}, {"", "ReduceMin", 20},
    {"", "RegexFullMatch", 20}, {"", "StringConcat", 20}, {"", "StringSplit", 20}, {"", "Cast", 21},
    {"", "CastLike", 21}, {"", "Constant", 21}, {"", "ConstantOfShape", 21}, {"", "DequantizeLinear", 21},
    {"", "Flatten", 21}, {"", "GroupNormalization", 21}, {"", "Identity", 21}, {"", "If", 21}, {"", "Loop", 21},
    {"", "Pad", 21}, {"", "QLinearMatMul", 21}, {"", "QuantizeLinear", 21}, {"", "Reshape", 21}, {"", "Scan", 21},
    {"", "Shape", 21}, {"", "Size", 21}, {"", "Squeeze", 21}, {"", "Transpose", 21}, {"", "Unsqueeze", 21},
    {kMl, "LabelEncoder", 4}, {kMl, "TreeEnsemble", 5}, {kMl, "TreeEnsembleRegressor", 5},
    {kMl, "TreeEnsembleClassifier", 5},
};

const OpSchema& library_schema(const char* op, int version, const char* domain = "") {
  const OpSchema* s = OpSchemaRegistry::Schema(op, version, domain);
  if (!s) fail(ErrorCode::Internal, fmt::format("the onnx library has no schema for {} {}", op, version));
  return *s;
}

void add(OpSchema schema) {
  // Registers into the library's map (and finalizes: input / output counts from the formal params).
  OpSchemaRegistry::OpSchemaRegisterOnce once(schema);
  (void)once;
}

// A fresh schema with `old`'s name, domain, inputs, outputs, type constraints (those of `retype`
// replaced), attributes and inference, as version `to`. (A finalized schema cannot be copied and
// registered again: finalizing counts its inputs a second time.)
OpSchema rebuild(const OpSchema& old, int to,
                 const std::vector<std::pair<std::string, std::vector<std::string>>>& retype = {}) {
  OpSchema s;
  s.SetName(old.Name()).SetDomain(old.domain()).SinceVersion(to);
  if (old.doc()) s.SetDoc(old.doc());
  int k = 0;
  for (const auto& p : old.inputs())
    s.Input(k++, p.GetName(), p.GetDescription(), p.GetTypeStr(), p.GetOption(), p.GetIsHomogeneous(),
            p.GetMinArity(), p.GetDifferentiationCategory());
  k = 0;
  for (const auto& p : old.outputs())
    s.Output(k++, p.GetName(), p.GetDescription(), p.GetTypeStr(), p.GetOption(), p.GetIsHomogeneous(),
             p.GetMinArity(), p.GetDifferentiationCategory());
  for (const auto& c : old.typeConstraintParams()) {
    std::vector<std::string> types = c.allowed_type_strs;
    for (const auto& [name, replacement] : retype)
      if (name == c.type_param_str) types = replacement;
    s.TypeConstraint(c.type_param_str, types, c.description);
  }
  for (const auto& [name, attr] : old.attributes()) s.Attr(attr);
  s.TypeAndShapeInferenceFunction(old.GetTypeAndShapeInferenceFunction());
  return s;
}

// The library's schema of `op` in force at `from`, as the schema of version `to`.
OpSchema same_as(const char* op, int from, int to, const char* domain = "") {
  return rebuild(library_schema(op, from, domain), to);
}

const std::vector<std::string> kNumeric = {"tensor(uint8)",  "tensor(uint16)",  "tensor(uint32)", "tensor(uint64)",
                                           "tensor(int8)",   "tensor(int16)",   "tensor(int32)",  "tensor(int64)",
                                           "tensor(float16)", "tensor(float)", "tensor(double)", "tensor(bfloat16)"};

// Reduce* from opset 18 (ReduceSum since 13): `axes` an optional int64 input. The shapes follow
// the same rule as ReduceSum 13's, whose inference function is reused.
OpSchema reduce(const char* op, int version, bool with_bool) {
  std::vector<std::string> types = kNumeric;
  if (with_bool) types.push_back("tensor(bool)");
  OpSchema s;
  s.SetName(op).SetDomain("").SinceVersion(version);
  s.Input(0, "data", "An input tensor.", "T");
  s.Input(1, "axes", "Axes to reduce over.", "tensor(int64)", OpSchema::Optional);
  s.Output(0, "reduced", "Reduced output tensor.", "T");
  s.TypeConstraint("T", types, "Input and output types.");
  s.Attr("keepdims", "Keep the reduced dimension or not.", AttributeProto::INT, static_cast<int64_t>(1));
  s.Attr("noop_with_empty_axes", "Empty axes: no reduction instead of all axes.", AttributeProto::INT,
         static_cast<int64_t>(0));
  s.TypeAndShapeInferenceFunction(library_schema("ReduceSum", 13).GetTypeAndShapeInferenceFunction());
  return s;
}

// Split 18: `num_outputs` splits into that many parts of ceil(dim / num_outputs), the last smaller.
void split18_inference(InferenceContext& ctx, const onnx::InferenceFunction& split13) {
  const AttributeProto* num = ctx.getAttribute("num_outputs");
  if (!num) {
    if (ctx.getNumInputs() < 2 || ctx.getInputType(1) == nullptr)
      fail_shape_inference("Split needs the 'split' input or the 'num_outputs' attribute from opset 18");
    split13(ctx);
    return;
  }
  if (ctx.getNumInputs() > 1 && ctx.getInputType(1) != nullptr)
    fail_shape_inference("Split has both the 'split' input and the 'num_outputs' attribute");
  if (num->i() < 1 || static_cast<size_t>(num->i()) != ctx.getNumOutputs())
    fail_shape_inference("Split's num_outputs (", num->i(), ") is not its number of outputs (",
                         ctx.getNumOutputs(), ")");
  for (size_t k = 0; k < ctx.getNumOutputs(); ++k) onnx::propagateElemTypeFromInputToOutput(ctx, 0, k);
  if (!onnx::hasNInputShapes(ctx, 1)) return;
  const auto& shape = onnx::getInputShape(ctx, 0);
  const int rank = shape.dim_size();
  int64_t axis = onnx::getAttribute(ctx, "axis", 0);
  if (axis < -rank || axis >= rank) fail_shape_inference("Split's axis ", axis, " is out of range for rank ", rank);
  if (axis < 0) axis += rank;
  const auto& dim = shape.dim(static_cast<int>(axis));
  const int64_t n = num->i();
  for (size_t k = 0; k < ctx.getNumOutputs(); ++k) {
    auto* out = ctx.getOutputType(k)->mutable_tensor_type()->mutable_shape();
    out->CopyFrom(shape);
    auto* d = out->mutable_dim(static_cast<int>(axis));
    d->Clear();
    if (!dim.has_dim_value()) continue;
    if (dim.dim_value() < n) fail_shape_inference("Split: dimension ", dim.dim_value(), " has fewer than ", n, " parts");
    const int64_t part = (dim.dim_value() + n - 1) / n;
    const int64_t start = part * static_cast<int64_t>(k);
    d->set_dim_value(std::max<int64_t>(0, std::min(part, dim.dim_value() - start)));
  }
}

// Pad 18 (optional `axes` input: the pads cover those axes only). With axes, only the rank is
// inferred; without, Pad 13's inference.
void pad18_inference(InferenceContext& ctx, const onnx::InferenceFunction& pad13) {
  if (ctx.getNumInputs() > 3 && ctx.getInputType(3) != nullptr) {
    onnx::propagateElemTypeFromInputToOutput(ctx, 0, 0);
    if (!onnx::hasNInputShapes(ctx, 1)) return;
    auto* out = ctx.getOutputType(0)->mutable_tensor_type()->mutable_shape();
    out->Clear();
    for (int k = 0; k < onnx::getInputShape(ctx, 0).dim_size(); ++k) out->add_dim();
    return;
  }
  pad13(ctx);
}

OpSchema pad(int version) {
  OpSchema s = same_as("Pad", 13, version);
  s.Input(3, "axes", "The axes the pads apply to.", "Tind", OpSchema::Optional);
  s.TypeConstraint("Tind", {"tensor(int32)", "tensor(int64)"}, "Axes types.");
  auto pad13 = library_schema("Pad", 13).GetTypeAndShapeInferenceFunction();
  s.TypeAndShapeInferenceFunction([pad13](InferenceContext& ctx) { pad18_inference(ctx, pad13); });
  return s;
}

// Resize 18 / 19: antialias, axes, keep_aspect_ratio_policy (and 19's half_pixel_symmetric, a new
// value of an existing attribute). Resize 13's inference holds for the defaults; Flock's precheck
// refuses the other values before the library sees them (the kernel runs only the defaults).
OpSchema resize(int version) {
  OpSchema s = same_as("Resize", 13, version);
  s.Attr("antialias", "Antialiasing filter when downscaling.", AttributeProto::INT, static_cast<int64_t>(0));
  s.Attr("axes", "The axes roi, scales and sizes refer to.", AttributeProto::INTS, false);
  s.Attr("keep_aspect_ratio_policy", "How sizes keeps the aspect ratio.", AttributeProto::STRING,
         std::string("stretch"));
  return s;
}

// Cast / CastLike 19 and 21: `saturate` (float8 targets only, which Flock refuses).
OpSchema with_saturate(const char* op, int from, int to) {
  OpSchema s = same_as(op, from, to);
  s.Attr("saturate", "Saturation for float8 targets.", AttributeProto::INT, static_cast<int64_t>(1));
  return s;
}

// Equal 19: also string tensors. Equal 13's inference (broadcast, bool output) holds.
OpSchema equal19() {
  OpSchema s;
  s.SetName("Equal").SetDomain("").SinceVersion(19);
  s.Input(0, "A", "First input operand.", "T");
  s.Input(1, "B", "Second input operand.", "T");
  s.Output(0, "C", "Result tensor.", "T1");
  std::vector<std::string> types = kNumeric;
  types.push_back("tensor(bool)");
  types.push_back("tensor(string)");
  s.TypeConstraint("T", types, "Input types.");
  s.TypeConstraint("T1", {"tensor(bool)"}, "Output type.");
  s.TypeAndShapeInferenceFunction(library_schema("Equal", 13).GetTypeAndShapeInferenceFunction());
  return s;
}

// AveragePool 19: `dilations`. AveragePool 11's inference ignores them, so dilations other than 1
// are refused by the precheck; with all 1 the shapes are the same.
OpSchema average_pool19() {
  OpSchema s = same_as("AveragePool", 11, 19);
  s.Attr("dilations", "Dilation value along each spatial axis.", AttributeProto::INTS, false);
  return s;
}

OpSchema mish18() {
  OpSchema s;
  s.SetName("Mish").SetDomain("").SinceVersion(18);
  s.Input(0, "X", "Input tensor.", "T");
  s.Output(0, "Y", "Output tensor.", "T");
  s.TypeConstraint("T", {"tensor(float16)", "tensor(float)", "tensor(double)"}, "Float types.");
  s.TypeAndShapeInferenceFunction(onnx::propagateShapeAndTypeFromFirstInput);
  return s;
}

// ---------------------------------------------------------------------------------------------
// ai.onnx.ml 4: LabelEncoder with keys / values / default as tensors (any of int64, float,
// double, string, int32, int16 elements).

int32_t tensor_type_of(const AttributeProto* a) { return a && a->has_t() ? a->t().data_type() : 0; }

void label_encoder4_inference(InferenceContext& ctx) {
  auto attr = [&](const char* name) { return ctx.getAttribute(name); };
  // Exactly one keys form and one values form.
  const std::pair<const char*, int32_t> keys[] = {{"keys_strings", TensorProto::STRING},
                                                  {"keys_int64s", TensorProto::INT64},
                                                  {"keys_floats", TensorProto::FLOAT},
                                                  {"keys_tensor", tensor_type_of(attr("keys_tensor"))}};
  const std::pair<const char*, int32_t> values[] = {{"values_strings", TensorProto::STRING},
                                                    {"values_int64s", TensorProto::INT64},
                                                    {"values_floats", TensorProto::FLOAT},
                                                    {"values_tensor", tensor_type_of(attr("values_tensor"))}};
  int32_t key_type = 0, value_type = 0;
  int n_keys = 0, n_values = 0;
  for (const auto& [name, type] : keys)
    if (attr(name)) ++n_keys, key_type = type;
  for (const auto& [name, type] : values)
    if (attr(name)) ++n_values, value_type = type;
  if (n_keys != 1) fail_shape_inference("LabelEncoder needs exactly one of the keys_* attributes, has ", n_keys);
  if (n_values != 1) fail_shape_inference("LabelEncoder needs exactly one of the values_* attributes, has ", n_values);
  for (const char* name : {"keys_tensor", "values_tensor", "default_tensor"}) {
    const AttributeProto* t = attr(name);
    if (t && (!t->has_t() || (std::string(name) != "default_tensor" && t->t().dims_size() != 1)))
      fail_shape_inference("LabelEncoder's ", name, " must be a ", std::string(name) == "default_tensor" ? "" : "1-D ",
                           "tensor");
  }
  if (const AttributeProto* d = attr("default_tensor"); d && d->t().data_type() != value_type)
    fail_shape_inference("LabelEncoder's default_tensor has element type ", d->t().data_type(),
                         ", its values have ", value_type);
  const int32_t input_type = ctx.getInputType(0)->tensor_type().elem_type();
  if (input_type != key_type)
    fail_shape_inference("LabelEncoder's input has element type ", input_type, ", its keys have ", key_type);
  onnx::updateOutputElemType(ctx, 0, value_type);
  if (onnx::hasInputShape(ctx, 0)) onnx::propagateShapeFromInputToOutput(ctx, 0, 0);
}

OpSchema label_encoder4() {
  OpSchema s;
  s.SetName("LabelEncoder").SetDomain(kMl).SinceVersion(4);
  s.Input(0, "X", "Input data.", "T1");
  s.Output(0, "Y", "Output data.", "T2");
  const std::vector<std::string> types = {"tensor(string)", "tensor(int64)", "tensor(float)",
                                          "tensor(int32)",  "tensor(int16)", "tensor(double)"};
  s.TypeConstraint("T1", types, "Input type.");
  s.TypeConstraint("T2", types, "Output type.");
  for (const char* name : {"keys_strings", "values_strings"})
    s.Attr(name, "Strings.", AttributeProto::STRINGS, false);
  for (const char* name : {"keys_int64s", "values_int64s"}) s.Attr(name, "Integers.", AttributeProto::INTS, false);
  for (const char* name : {"keys_floats", "values_floats"}) s.Attr(name, "Floats.", AttributeProto::FLOATS, false);
  for (const char* name : {"keys_tensor", "values_tensor"}) s.Attr(name, "A 1-D tensor.", AttributeProto::TENSOR, false);
  s.Attr("default_string", "Default string.", AttributeProto::STRING, std::string("_Unused"));
  s.Attr("default_int64", "Default integer.", AttributeProto::INT, static_cast<int64_t>(-1));
  s.Attr("default_float", "Default float.", AttributeProto::FLOAT, -0.0f);
  s.Attr("default_tensor", "Default value as a tensor.", AttributeProto::TENSOR, false);
  s.TypeAndShapeInferenceFunction(label_encoder4_inference);
  return s;
}

// ---------------------------------------------------------------------------------------------
// ai.onnx.ml 5: TreeEnsemble.

// An INTS attribute of `n` values, or (tensor) a 1-D tensor of `n` elements of `type`.
void require_length(const AttributeProto* a, const char* name, int64_t n, int32_t type, bool required) {
  if (!a) {
    if (required) fail_shape_inference("TreeEnsemble lacks attribute '", name, "'");
    return;
  }
  if (a->type() == AttributeProto::INTS) {
    if (a->ints_size() != n) fail_shape_inference("TreeEnsemble's ", name, " has ", a->ints_size(), " values, not ", n);
    return;
  }
  if (!a->has_t() || a->t().dims_size() != 1 || a->t().dims(0) != n || a->t().data_type() != type)
    fail_shape_inference("TreeEnsemble's ", name, " must be a 1-D tensor of ", n, " elements of type ", type);
}

void tree_ensemble5_inference(InferenceContext& ctx) {
  onnx::checkInputRank(ctx, 0, 2);
  const AttributeProto* splits = ctx.getAttribute("nodes_splits");
  if (!splits || !splits->has_t() || splits->t().dims_size() != 1)
    fail_shape_inference("TreeEnsemble's nodes_splits must be a 1-D tensor");
  const int32_t input_type = ctx.getInputType(0)->tensor_type().elem_type();
  if (splits->t().data_type() != input_type)
    fail_shape_inference("TreeEnsemble's nodes_splits has element type ", splits->t().data_type(),
                         ", its input has ", input_type);
  const int64_t n = splits->t().dims(0);
  require_length(ctx.getAttribute("nodes_featureids"), "nodes_featureids", n, 0, true);
  require_length(ctx.getAttribute("nodes_hitrates"), "nodes_hitrates", n, TensorProto::FLOAT, false);
  require_length(ctx.getAttribute("nodes_modes"), "nodes_modes", n, TensorProto::UINT8, true);
  require_length(ctx.getAttribute("nodes_truenodeids"), "nodes_truenodeids", n, 0, true);
  require_length(ctx.getAttribute("nodes_falsenodeids"), "nodes_falsenodeids", n, 0, true);
  require_length(ctx.getAttribute("nodes_trueleafs"), "nodes_trueleafs", n, 0, true);
  require_length(ctx.getAttribute("nodes_falseleafs"), "nodes_falseleafs", n, 0, true);
  require_length(ctx.getAttribute("nodes_missing_value_tracks_true"), "nodes_missing_value_tracks_true", n, 0, false);
  if (const AttributeProto* m = ctx.getAttribute("membership_values");
      m && (!m->has_t() || m->t().dims_size() != 1 || m->t().data_type() != input_type))
    fail_shape_inference("TreeEnsemble's membership_values must be a 1-D tensor of the input's element type");
  const AttributeProto* targets = ctx.getAttribute("leaf_targetids");
  const AttributeProto* weights = ctx.getAttribute("leaf_weights");
  if (!targets || !weights) fail_shape_inference("TreeEnsemble needs both leaf_targetids and leaf_weights");
  require_length(weights, "leaf_weights", targets->ints_size(), input_type, true);
  const int64_t n_targets = onnx::getAttribute(ctx, "n_targets", -1);
  if (n_targets < 1) fail_shape_inference("TreeEnsemble needs n_targets of at least 1");
  const int64_t transform = onnx::getAttribute(ctx, "post_transform", 0);
  if (transform < 0 || transform > 4) fail_shape_inference("TreeEnsemble's post_transform ", transform, " is not 0-4");
  const int64_t aggregate = onnx::getAttribute(ctx, "aggregate_function", 1);
  if (aggregate < 0 || aggregate > 3)
    fail_shape_inference("TreeEnsemble's aggregate_function ", aggregate, " is not 0-3");
  onnx::propagateElemTypeFromInputToOutput(ctx, 0, 0);
  auto* out = ctx.getOutputType(0)->mutable_tensor_type()->mutable_shape();
  out->Clear();
  if (onnx::hasInputShape(ctx, 0)) *out->add_dim() = onnx::getInputShape(ctx, 0).dim(0);
  else out->add_dim();
  out->add_dim()->set_dim_value(n_targets);
}

OpSchema tree_ensemble5() {
  OpSchema s;
  s.SetName("TreeEnsemble").SetDomain(kMl).SinceVersion(5);
  s.Input(0, "X", "Input of shape [N, F].", "T");
  s.Output(0, "Y", "Output of shape [N, n_targets].", "T");
  s.TypeConstraint("T", {"tensor(float)", "tensor(double)", "tensor(float16)"}, "Input and output type.");
  for (const char* name : {"nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids", "nodes_trueleafs",
                           "nodes_falseleafs", "tree_roots", "leaf_targetids"})
    s.Attr(name, "Integers per node / leaf / tree.", AttributeProto::INTS, true);
  s.Attr("nodes_missing_value_tracks_true", "Per node: NaN goes to the true branch.", AttributeProto::INTS, false);
  for (const char* name : {"nodes_splits", "nodes_modes", "leaf_weights"})
    s.Attr(name, "A 1-D tensor.", AttributeProto::TENSOR, true);
  for (const char* name : {"nodes_hitrates", "membership_values"})
    s.Attr(name, "A 1-D tensor.", AttributeProto::TENSOR, false);
  s.Attr("n_targets", "Number of targets.", AttributeProto::INT, false);
  s.Attr("post_transform", "0 NONE, 1 SOFTMAX, 2 LOGISTIC, 3 SOFTMAX_ZERO, 4 PROBIT.", AttributeProto::INT,
         static_cast<int64_t>(0));
  s.Attr("aggregate_function", "0 AVERAGE, 1 SUM, 2 MIN, 3 MAX.", AttributeProto::INT, static_cast<int64_t>(1));
  s.TypeAndShapeInferenceFunction(tree_ensemble5_inference);
  return s;
}

// ai.onnx.ml 5 deprecates TreeEnsembleRegressor / TreeEnsembleClassifier (TreeEnsemble replaces
// them): the library's checker then refuses them at that opset, as ONNX's does.
OpSchema deprecated(const char* op, int from, int to) {
  OpSchema s = same_as(op, from, to, kMl);
  s.Deprecate();
  return s;
}

void register_all() {
  (void)OpSchemaRegistry::Schema("Relu");  // the library's own schemas first
  // Raise the versions the library accepts registrations for. Map() is the registry's own map,
  // returned const; nothing else writes it.
  auto& ranges = const_cast<std::unordered_map<std::string, std::pair<int, int>>&>(
      OpSchemaRegistry::DomainToVersionRange::Instance().Map());
  ranges[onnx::ONNX_DOMAIN].second = static_cast<int>(kMaxOnnxOpset);
  ranges[onnx::AI_ONNX_ML_DOMAIN].second = static_cast<int>(kMaxMlOpset);

  for (const char* op : {"ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ReduceL1", "ReduceL2", "ReduceMax",
                         "ReduceMin", "ReduceMean", "ReduceProd"})
    add(reduce(op, 18, false));
  add(reduce("ReduceMax", 20, true));
  add(reduce("ReduceMin", 20, true));
  {
    OpSchema s = same_as("Split", 13, 18);
    s.Attr("num_outputs", "Number of outputs to split into.", AttributeProto::INT, false);
    auto split13 = library_schema("Split", 13).GetTypeAndShapeInferenceFunction();
    s.TypeAndShapeInferenceFunction([split13](InferenceContext& ctx) { split18_inference(ctx, split13); });
    add(std::move(s));
  }
  add(pad(18));
  add(pad(19));  // mode 'wrap' (refused by check_newer_attributes and the kernel)
  add(pad(21));
  add(resize(18));
  add(resize(19));
  add(mish18());
  add(equal19());
  add(average_pool19());
  for (int v : {19, 21}) {
    add(with_saturate("Cast", 13, v));
    add(with_saturate("CastLike", 15, v));
    add(same_as("Constant", 13, v));
    add(same_as("Identity", 16, v));
    add(same_as("Reshape", 14, v));
    add(same_as("Shape", 15, v));
    add(same_as("Size", 13, v));
  }
  add(same_as("ConstantOfShape", 9, 20));
  add(same_as("ConstantOfShape", 9, 21));
  add(same_as("IsInf", 10, 20));
  add(same_as("IsNaN", 13, 20));
  add(same_as("Flatten", 13, 21));
  add(same_as("Squeeze", 13, 21));
  add(same_as("Unsqueeze", 13, 21));
  add(same_as("Transpose", 13, 21));
  add(label_encoder4());
  add(tree_ensemble5());
  add(deprecated("TreeEnsembleRegressor", 3, 5));
  add(deprecated("TreeEnsembleClassifier", 3, 5));
}

std::once_flag registered;

// Element types added by IR 9 and 10 (and later), which libonnx 1.12 does not know.
const char* newer_element_type(int64_t type) {
  switch (type) {
    case 17: return "FLOAT8E4M3FN";
    case 18: return "FLOAT8E4M3FNUZ";
    case 19: return "FLOAT8E5M2";
    case 20: return "FLOAT8E5M2FNUZ";
    case 21: return "UINT4";
    case 22: return "INT4";
    default: return type > 22 ? "an element type newer than ONNX 1.16's" : nullptr;
  }
}

[[noreturn]] void refuse_element_type(int64_t type, const std::string& what) {
  fail(ErrorCode::UnsupportedOperator,
       fmt::format("{} has element type {}, which Flock does not run", what, newer_element_type(type)),
       "Flock runs float, double, int64 (and narrower integers), bool and string tensors.");
}

// Float8 and 4-bit types anywhere the graph declares a type or casts to one: refused by name
// (the library would report them as invalid types).
void check_newer_element_types(const onnx::GraphProto& g) {
  auto check_value = [](const onnx::ValueInfoProto& v) {
    if (v.type().has_tensor_type() && newer_element_type(v.type().tensor_type().elem_type()))
      refuse_element_type(v.type().tensor_type().elem_type(), fmt::format("value '{}'", v.name()));
  };
  for (const auto& v : g.input()) check_value(v);
  for (const auto& v : g.output()) check_value(v);
  for (const auto& v : g.value_info()) check_value(v);
  for (const auto& t : g.initializer())
    if (newer_element_type(t.data_type())) refuse_element_type(t.data_type(), fmt::format("initializer '{}'", t.name()));
  for (const auto& node : g.node())
    for (const auto& a : node.attribute()) {
      if (a.name() == "to" && (node.op_type() == "Cast") && newer_element_type(a.i()))
        refuse_element_type(a.i(), fmt::format("{} '{}': its target type", node.op_type(), node.name()));
      if (a.has_t() && newer_element_type(a.t().data_type()))
        refuse_element_type(a.t().data_type(), fmt::format("{} '{}': attribute '{}'", node.op_type(), node.name(),
                                                           a.name()));
    }
}

std::string domain_name(const std::string& domain) { return domain.empty() ? "ai.onnx" : domain; }

const AttributeProto* find_attribute(const onnx::NodeProto& node, const char* name) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

// What the newer versions of an operator allow that Flock's schemas do not check the shapes of,
// and its kernels do not run: refused here, naming it, before the library's inference misreads it.
void check_newer_attributes(const onnx::NodeProto& node, const std::string& domain, int64_t opset,
                            const OpSchema& schema) {
  const std::string& op = node.op_type();
  auto refuse = [&](const std::string& what) {
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("{} '{}' ({} opset {}): {} is not supported", op, node.name(), domain_name(domain), opset, what),
         "Flock runs this operator with the attribute values of its earlier versions.");
  };
  if (schema.Deprecated())
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("operator {} is deprecated in {} opset {} (the model imports opset {})", op, domain_name(domain),
                     schema.SinceVersion(), opset),
         op.rfind("TreeEnsemble", 0) == 0 ? "Use TreeEnsemble at ai.onnx.ml opset 5, or import ai.onnx.ml opset 4 or lower."
                                          : "Re-export the model with a lower opset.");
  if (!domain.empty() || opset <= kLibraryOnnxOpset) return;
  if (op == "Resize") {
    if (const auto* a = find_attribute(node, "antialias"); a && a->i() != 0) refuse("antialias");
    if (find_attribute(node, "axes")) refuse("attribute 'axes'");
    if (const auto* a = find_attribute(node, "keep_aspect_ratio_policy"); a && a->s() != "stretch")
      refuse(fmt::format("keep_aspect_ratio_policy '{}'", a->s()));
    if (const auto* a = find_attribute(node, "coordinate_transformation_mode"); a && a->s() == "half_pixel_symmetric")
      refuse("coordinate_transformation_mode 'half_pixel_symmetric'");
  }
  if (op == "AveragePool" && opset >= 19) {
    if (const auto* a = find_attribute(node, "dilations"))
      for (int64_t d : a->ints())
        if (d != 1) refuse("dilations other than 1");
    // Opset 19 drops a last window that would start in the end padding; the kernel follows the
    // earlier rule.
    if (const auto* a = find_attribute(node, "ceil_mode"); a && a->i() != 0) refuse("ceil_mode 1");
  }
  if (op == "Pad" && opset >= 19)
    if (const auto* a = find_attribute(node, "mode"); a && a->s() == "wrap") refuse("mode 'wrap'");
}

}  // namespace

void register_newer_onnx_schemas() { std::call_once(registered, register_all); }

std::set<std::string> check_operator_versions(const onnx::ModelProto& model) {
  std::set<std::string> own;
  check_newer_element_types(model.graph());
  std::unordered_map<std::string, int64_t> opsets;
  for (const auto& op : model.opset_import()) {
    const std::string domain = op.domain() == "ai.onnx" ? "" : op.domain();
    opsets[domain] = op.version();
  }
  for (const auto& [domain, version] : opsets) {
    if (domain.empty() && (version < kMinOnnxOpset || version > kMaxOnnxOpset))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model imports ai.onnx opset {}; Flock runs ai.onnx opsets {} to {}", version, kMinOnnxOpset,
                       kMaxOnnxOpset),
           fmt::format("Re-export the model with an opset in that range (e.g. torch.onnx.export(..., "
                       "opset_version={}) or skl2onnx's target_opset={{'': {}, 'ai.onnx.ml': {}}}).",
                       kMaxOnnxOpset, kMaxOnnxOpset, kMaxMlOpset));
    if (domain == kMl && (version < 1 || version > kMaxMlOpset))
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("model imports ai.onnx.ml opset {}; Flock runs ai.onnx.ml opsets 1 to {}", version,
                       kMaxMlOpset),
           fmt::format("Re-export the model with ai.onnx.ml opset {} or lower.", kMaxMlOpset));
  }
  if (model.ir_version() > kMaxIrVersion)
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("model has ONNX IR version {}; Flock reads IR versions up to {} (ONNX 1.16)", model.ir_version(),
                     kMaxIrVersion),
         "Re-export the model with an older onnx package or a lower opset.");
  register_newer_onnx_schemas();
  const KernelRegistry& registry = KernelRegistry::instance();
  for (const auto& node : model.graph().node()) {
    const std::string domain = node.domain() == "ai.onnx" ? "" : node.domain();
    auto it = opsets.find(domain);
    if (it == opsets.end() || (domain != "" && domain != kMl)) continue;  // the checker reports these
    const int64_t opset = it->second;
    const OpSchema* schema = OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(opset), domain);
    int changed = 0;  // the latest version up to `opset` at which the operator changed
    for (const Change& c : kChanges)
      if (domain == c.domain && node.op_type() == c.op && c.version <= opset) changed = std::max(changed, c.version);
    if (schema && schema->SinceVersion() >= changed) {
      check_newer_attributes(node, domain, opset, *schema);
      if (schema->SinceVersion() > (domain.empty() ? kLibraryOnnxOpset : kLibraryMlOpset)) own.insert(node.op_type());
      continue;
    }
    // No definition of the operator at this opset that Flock knows: either Flock does not run
    // the operator at all, or not its newer version.
    const bool claimed = registry.find(domain, node.op_type()) != nullptr;
    const std::string op = domain.empty() ? node.op_type() : domain + ":" + node.op_type();
    if (!claimed || !changed)
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("operator {} ({} opset {}) is not supported", op, domain_name(domain), opset),
           fmt::format("Flock runs these operators: {}.", fmt::join(registry.supported(), ", ")));
    fail(ErrorCode::UnsupportedOperator,
         fmt::format("operator {} changed in {} opset {}, and Flock does not run that version (the model imports "
                     "opset {})",
                     op, domain_name(domain), changed, opset),
         fmt::format("Re-export the model with {} opset {} or lower.", domain_name(domain), changed - 1));
  }
  return own;
}

}  // namespace flock
