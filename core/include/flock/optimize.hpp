// The optimizer's passes over compiled models (core/src/optimize/), for a planner that knows what a
// query says about a model's inputs. Pure functions of a loaded Model: no PostgreSQL, no I/O.
//
//   Constraints       what is known about each input column: an interval of values, and whether a
//                     missing value (NULL / NaN) is possible.
//   inputs_read       the input columns whose value can change a model's outputs.
//   specialize        a model that gives the same outputs, bit for bit, on every input the
//                     constraints allow, with the tree branches the constraints decide removed.
//   as_expression     a small model as an expression (constants, comparisons, CASE, arithmetic)
//                     that a planner can turn into SQL (model inlining).
//   cost              what scoring one row costs, in abstract units.
//
// None of them throws for a model it does not understand: it answers conservatively ("all columns",
// nullopt). They throw only std::bad_alloc.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flock/model.hpp"

namespace flock::optimize {

// One end of an interval.
struct Bound {
  double value = 0;
  bool closed = true;  // value itself included
};

// A set of non-missing values: lower / upper bounds, each absent (no limit: the infinities are
// included), open or closed; possibly empty or a single point. Bounds are never NaN (the
// constructors and intersect() treat a NaN bound as absent).
class Interval {
 public:
  Interval() = default;  // every value, -inf and +inf included
  static Interval all() { return {}; }
  static Interval point(double v);
  static Interval at_least(double v);      // [v, +inf]
  static Interval greater_than(double v);  // (v, +inf]
  static Interval at_most(double v);       // [-inf, v]
  static Interval less_than(double v);     // [-inf, v)
  static Interval between(Bound lower, Bound upper);
  static Interval none();                  // no value

  const std::optional<Bound>& lower() const { return lower_; }
  const std::optional<Bound>& upper() const { return upper_; }
  bool is_empty() const;
  bool is_all() const { return !lower_ && !upper_; }
  bool contains(double v) const;  // false for NaN
  Interval intersect(const Interval& other) const;
  // "[1, 2)", "(-inf, 3]", "{4}", "{}".
  std::string to_string() const;

  bool operator==(const Interval& other) const;

 private:
  std::optional<Bound> lower_, upper_;
};

// What is known about one input column.
struct FeatureConstraint {
  Interval values;              // the non-missing values it may hold
  bool missing_allowed = true;  // NULL or NaN possible (both reach the model as NaN)

  static FeatureConstraint any() { return {}; }
  bool is_any() const { return values.is_all() && missing_allowed; }
  bool is_empty() const { return values.is_empty() && !missing_allowed; }  // no value at all
  bool contains(double v) const;  // NaN: missing_allowed
  FeatureConstraint intersect(const FeatureConstraint& other) const;
  std::string to_string() const;  // "(1, 2] or missing", "[0, 0]"
};

// Per column of a model's single vector input (one entry per column, in input order).
//
// How the values relate to what the model receives (`exact_input_values`):
//  * false (the default): the constraints are on the values the caller holds (a float8 or integer
//    column, say), which reach the model rounded to nearest in its input type (float, double or
//    int64 converted to float by the trees). Bounds then hold only up to that rounding: x > 1 on a
//    double becomes x >= 1.0f on the float the model sees.
//  * true: the values are exactly the model's input values (a float4 column into a float input,
//    float8 into double), so an open bound stays open.
// Note for SQL: PostgreSQL orders NaN above every number, so `x > c` holds for a NaN x: such a
// predicate leaves missing_allowed true. Only `IS NOT NULL`-like facts on a non-NaN domain (and
// strict comparisons on integer columns) exclude missing values.
struct Constraints {
  std::vector<FeatureConstraint> columns;
  bool exact_input_values = false;

  Constraints() = default;
  explicit Constraints(size_t n_columns) : columns(n_columns) {}
  // Column-wise intersection; a column only one side has is taken as it is (the other side says
  // nothing about it). Exact only when both sides are (exact_input_values).
  Constraints intersect(const Constraints& other) const;
  // Some column admits no value: no row satisfies the constraints.
  bool unsatisfiable() const;
  // "f00 > 1, f01 <= -0.5" for the constrained columns, using `names` when given.
  std::string to_string(const std::vector<std::string>& names = {}) const;
};

// The columns of the model's single vector input that can change its outputs.
struct InputsRead {
  bool all = true;          // unknown or every column: read them all
  std::vector<bool> read;   // when !all: per input column, whether the model reads it
  int64_t width = 0;        // columns of the input (-1 when the model has no single vector input)
  int64_t count() const;    // columns read (width when all)
  std::string summary() const;  // "Inputs Read: 5 of 28"
};

// Tree ensembles (TreeEnsembleRegressor / Classifier reading the model input directly or through
// Scalers and Imputers, which map columns one to one): the columns some reachable branch splits on. Linear models: the columns with a nonzero coefficient, when the
// constraints also say the column is never missing and finite in float (a zero coefficient still
// turns NaN or infinity into NaN). A column not read can be fed any value (0, say) with outputs
// unchanged, up to the sign of a zero score of a linear model. Anything else reads every column.
InputsRead inputs_read(const Model& model, const Constraints& constraints = {});

struct SpecializeStats {
  int64_t nodes_before = 0;    // tree nodes (branches and leaves), all ensembles of the model
  int64_t nodes_after = 0;
  int64_t branches_removed = 0;  // branches replaced by their one reachable child
  int64_t trees = 0;
  int64_t trees_collapsed = 0;   // trees that were branches and are now a single leaf
  int64_t ensembles = 0;         // tree kernels specialized
  // "Pruned: 1,412 of 3,900 nodes, 12 of 100 trees to a leaf".
  std::string summary() const;
};

struct Specialized {
  std::shared_ptr<const Model> model;  // scores like the original on inputs the constraints allow
  SpecializeStats stats;
};

// A model that gives the same outputs as `model` (bit for bit: labels, probabilities, values) on
// every input the constraints allow, where each tree ensemble that reads the model's input
// (directly, or through a chain of Scalers and float Imputers: the constraints then follow the
// Scaler's float arithmetic, every step of which is monotone, and the Imputer's replacements) has
// lost the branches the constraints decide (including what earlier branches of the
// same path decide): a branch whose every allowed value, missing ones included, goes one way is
// replaced by that child, exactly as the tree walk compares (mode, missing_value_tracks_true, NaN,
// float or double thresholds). Trees that collapse to a leaf stay in the ensemble as that leaf
// (their value is added in the same order, so sums keep their bits; they read no column).
// Other steps of the graph, and ensembles that lose no branch, share their kernels with `model`
// (the returned model keeps them alive; memory_bytes() counts them again). On inputs outside the
// constraints the result is unspecified. Cost: linear in the nodes walked (one walk per
// root-to-node path; a tree whose nodes are shared is walked per path, within a budget).
//
// nullopt when there is nothing it can do: not a single float / double / int64 vector input, the
// constraints' width differs from the input's, no tree ensemble reads the input, or an ensemble it
// cannot rebuild. When the constraints are unsatisfiable any model is right; it returns nullopt.
std::optional<Specialized> specialize(const Model& model, const Constraints& constraints);

// ---- Prediction-predicate inversion

enum class Comparison { Greater, GreaterOrEqual, Less, LessOrEqual };  // prediction OP c

// What a row whose prediction satisfies the comparison may hold in one column.
struct ColumnRegion {
  bool all = true;                  // nothing derived: any value, missing or not
  std::vector<Interval> intervals;  // when !all: sorted, disjoint, closed intervals of values
  bool missing_allowed = true;      // when !all: whether the column may be missing (NaN / NULL)
  bool contains(double v) const;    // NaN: missing_allowed
  std::string to_string(const std::string& name) const;  // "(f00 >= 0.82)", "(f01 <= 2 or f01 >= 3)"
};

struct PredictionRegion {
  bool none = false;  // no input allowed by the constraints satisfies the comparison
  std::vector<ColumnRegion> columns;  // per input column
  int64_t columns_narrowed() const;   // columns that are not `all`
  std::string to_string(const std::vector<std::string>& names = {}) const;  // "(f00 >= 0.82) AND ..."
};

// A per-column over-approximation of the inputs (within `constraints`) on which the model's value
// output (Prediction::values: the float output as a double, compared with c in double) satisfies
// `prediction OP c`: every such input has each column inside its ColumnRegion. The region says
// nothing about inputs outside `constraints`: a derived filter holds together with them.
// The intervals are of values as the model receives them (Constraints::exact_input_values
// semantics); with `exact_input_values` false they are widened by one step of the input type each
// side, so that they also hold for values the binding rounds to the input type.
//
// Supported: a single-target TreeEnsembleRegressor (SUM or AVERAGE, no PROBIT) reading the model's
// input directly, whose output is the model's only output, with finite leaf values and base value
// (a NaN prediction, which PostgreSQL orders above every number, cannot arise). The bounds are exact
// in floating point: the largest (smallest) output given a column's cell is computed with the
// kernel's own operations in its order, each monotone. nullopt for anything else; `constraints`
// empty means none, otherwise it has one entry per input column. Columns whose cells would take
// more than a work budget to evaluate stay `all`.
//
// The bound per cell is first the per-tree one (each tree's extreme leaf meeting the cell); where
// that does not exclude the cell, trees in groups of 4 are bounded together (only combinations of
// leaves whose boxes meet count), within `budget` (then the per-tree bound stands): regions are
// never larger than the per-tree bound's, often smaller for boosted ensembles.
struct RegionBudget {
  // Leaf-box checks for the group bound; 0: none. The default adds 0-60 ms to a region (up to
  // 190 ms on a loaded machine) for a 500-tree depth-8 ensemble (flock_bench_region).
  int64_t tight_work = int64_t(1) << 22;
};
std::optional<PredictionRegion> prediction_region(const Model& model, Comparison op, double c,
                                                  const Constraints& constraints = {},
                                                  const RegionBudget& budget = {});

// The same for `predicted label = class_labels[class_index]` (class_index 0 or 1) on a two-class
// tree classifier reading the input directly whose label ORT's rules decide by a margin, a sum of
// one class-0 leaf weight per tree plus a base value, against 0 or 0.5: the binary case with one
// class-0 weight per leaf, or two scored classes with two base values and class 1 scored on every
// path (both of XGBoost's binary:logistic encodings; see tree::TreeKernel::binary_label_rule).
// nullopt for other models and class indices.
std::optional<PredictionRegion> label_region(const Model& model, int64_t class_index,
                                             const Constraints& constraints = {},
                                             const RegionBudget& budget = {});

// ---- Model inlining (ML-to-SQL)

// A model as an expression over the values of its input columns, for a planner to turn into SQL.
// `Input k` is column k's value as the binding holds it before converting it to the model's input
// type: a double, NaN when missing (NULL or NaN). Every operation is one IEEE double operation
// (round to nearest), so a translation that performs exactly these operations in this order gets
// exactly evaluate()'s result.
enum class ExprKind : uint8_t {
  Constant,      // value
  Input,         // column `column`'s value
  Branch,        // missing(x) ? (missing_yes ? yes : no) : (test(x) ? yes : no), x = column's value,
                 // or node `arg`'s when column < 0 (a preprocessed column)
  Add,           // left + right
  Multiply,      // left * right
  Divide,        // left / right
  RoundToFloat,  // the float nearest `left` (IEEE: overflow to +-inf, underflow to +-0), as a double
};

// A Branch's test on a column's non-missing value v (never NaN here).
enum class ExprTest : uint8_t {
  Less,          // v < a
  LessEqual,     // v <= a
  Greater,       // v > a
  GreaterEqual,  // v >= a
  Equal,         // v == a
  NotEqual,      // v != a
  Between,       // a < v && v <= b
  NotBetween,    // !(a < v && v <= b)
  Always,        // true
  Never,         // false
};

struct ExprNode {
  ExprKind kind = ExprKind::Constant;
  ExprTest test = ExprTest::Always;
  bool missing_yes = false;  // Branch: where a missing value goes
  int32_t column = -1;       // Input, Branch
  int32_t arg = -1;          // Branch with column < 0: the node whose value is tested
  bool never_missing = false;  // Branch on `arg`: its value is never NaN (a classifier's margin)
  int32_t left = -1;         // Add / Multiply / Divide / RoundToFloat; Branch: yes
  int32_t right = -1;        // Add / Multiply / Divide; Branch: no
  double value = 0;          // Constant
  double a = 0, b = 0;       // Branch: the test's constants (never NaN)
};

struct Expression {
  std::vector<ExprNode> nodes;  // children before their parents
  int32_t root = -1;
  // true: evaluate() equals the model's value output bit for bit (trees). false: within a relative
  // 1e-6 (linear models: the kernel sums in Eigen's order, the expression left to right).
  bool bit_exact = true;
  // The model refuses missing values (linear models): a NULL input is an error when scored, and the
  // expression must not be used on a row where a column may be NULL.
  bool missing_is_error = false;
  int64_t size() const { return static_cast<int64_t>(nodes.size()); }
};

// The default size limit of as_expression (nodes of the expression).
constexpr int64_t kMaxExpressionNodes = 4096;

// The model's value output (flock.predict) as an Expression, for
//  * a single-target TreeEnsembleRegressor (SUM or AVERAGE, no post transform) reading the model's
//    float or double input directly, whose output is the model's only output, with finite leaf
//    values and base value whose sums cannot overflow (nor, for AVERAGE over double leaves, a
//    quotient underflow: nonzero leaves below 2^-900 are refused): per tree a nest of Branches with Constant
//    leaves, mirroring the walk (modes, missing_value_tracks_true, float or double thresholds: a
//    float model compares float(v), which the Branch does on v with thresholds moved to the last
//    double that rounds to the same side), added tree by tree in double from 0, then the base value
//    (AVERAGE: after dividing by the tree count), then RoundToFloat;
//  * a LinearRegressor with one target and no post transform (affine()): RoundToFloat of the sum of
//    RoundToFloat(Input k) * coefficient, then the intercept (not bit_exact);
//  * either of them behind a Scaler reading the model's input: column k is then the Scaler's float
//    arithmetic, RoundToFloat(RoundToFloat(RoundToFloat(Input k) - offset) * scale) (each float
//    operation done in double and rounded once: exact), and the trees' Branches test that node.
//  * a two-class TreeEnsembleClassifier with integer labels reading the input directly whose label
//    is decided by a margin (tree::TreeKernel::binary_label_rule): the label (flock.predict's value)
//    is label 1 when margin > threshold, else label 0, the margin the class-0 leaf weights added per
//    tree in double from 0 plus the base value — a Branch on that sum (bit_exact).
// nullopt for anything else, or past `max_nodes`. Throws only std::bad_alloc.
std::optional<Expression> as_expression(const Model& model, int64_t max_nodes = kMaxExpressionNodes);

// The expression's value for one row of column values (NaN: missing). The reference semantics:
// what a translation must compute.
double evaluate(const Expression& e, std::span<const double> inputs);

// What scoring one row costs, in abstract units (about one tree node visited or one multiply-add):
// per tree ensemble the sum over its trees of the average leaf depth plus one (adding the leaf),
// per linear model its multiply-adds, any other step the input's width. At least 1. A rough
// ordering of models, not a time. Throws only std::bad_alloc.
double cost(const Model& model);

// ---- Linear specialization

// A LinearRegressor model (single target, no post transform, reading the input directly, as
// as_expression takes it) with the columns whose constraint is a single finite value folded into
// the intercept: their coefficients become 0 and intercept += float(value) * coefficient. Not bit
// for bit: the kernel sums in double in Eigen's order, so moving terms into the intercept changes
// the rounding of the double sum (the float result is within a relative 1e-6). nullopt when the
// model is not such a linear model or no column is fixed. `folded` gets the number of columns folded.
std::optional<std::shared_ptr<const Model>> fold_linear(const Model& model, const Constraints& constraints,
                                                        int64_t* folded = nullptr);

}  // namespace flock::optimize
