// Ridge regression and L2-penalized logistic regression, solved in double precision with Eigen and
// written as ONNX-ML (LinearRegressor / LinearClassifier). The objectives are scikit-learn's, so
// the fitted coefficients are theirs:
//   linear:   Ridge(alpha)               min ||y - Xw - b||^2 + alpha ||w||^2   (b not penalized)
//   logistic: LogisticRegression(C)      min C * sum logloss(y, Xw + b) + ||w||^2 / 2   (b not penalized)
// The first has a closed form (centered normal equations); the second is strictly convex and is
// solved by Newton's method to a gradient of 1e-10, so it reaches sklearn's optimum (lbfgs run to a
// tight tol) within rounding.
#include <onnx/onnx_pb.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <set>

#include "flock/error.hpp"
#include "flock/interrupt.hpp"
#include "flock/train.hpp"
#include "train_internal.hpp"

namespace flock::train {

namespace {

constexpr int kDefaultMaxIterations = 100;
constexpr double kDefaultTolerance = 1e-10;
constexpr float kMaxClasses = 1000;
// The intercepts of a multinomial model are free up to a common shift; this penalty picks the
// smallest, without moving the probabilities measurably.
constexpr double kInterceptRidge = 1e-10;

double number_param(const nlohmann::json& params, const char* name, double fallback, bool positive) {
  if (!params.contains(name)) return fallback;
  const auto& v = params[name];
  if (!v.is_number() || !std::isfinite(v.get<double>()) ||
      (positive ? v.get<double>() <= 0 : v.get<double>() < 0))
    fail(ErrorCode::InvalidInput, std::string("parameter ") + name + " must be a " +
                                      (positive ? "positive" : "non-negative") + " number");
  return v.get<double>();
}

Eigen::MatrixXd design(const TrainingData& data, const std::vector<std::int64_t>& rows) {
  Eigen::MatrixXd x(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(data.cols));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    for (std::int64_t c = 0; c < data.cols; ++c) {
      const float v = data.features[static_cast<std::size_t>(rows[i] * data.cols + c)];
      if (std::isnan(v))
        fail(ErrorCode::MissingValue,
             "feature \"" + data.feature_names[static_cast<std::size_t>(c)] + "\" is NULL in a training row",
             "Linear and logistic regression take no missing values: filter or impute them in the query, or "
             "use "
             "algorithm 'xgboost', which learns where they go.");
      x(static_cast<Eigen::Index>(i), c) = v;
    }
  }
  return x;
}

void add_float_attribute(onnx::NodeProto& node, const char* name, const std::vector<float>& values) {
  auto* a = node.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOATS);
  for (float v : values) a->add_floats(v);
}

void set_shape(onnx::ValueInfoProto* value, const char* name, int elem_type, std::int64_t cols) {
  value->set_name(name);
  auto* tensor = value->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(elem_type);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("N");
  if (cols > 0) shape->add_dim()->set_dim_value(cols);
}

std::string onnx_model(const std::string& op, std::int64_t inputs, const std::vector<float>& coefficients,
                       const std::vector<float>& intercepts, int classes = 0) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("flock.train");
  auto* ml = model.add_opset_import();
  ml->set_domain("ai.onnx.ml");
  ml->set_version(1);
  model.add_opset_import()->set_version(15);
  auto* graph = model.mutable_graph();
  graph->set_name(op == "LinearRegressor" ? "ridge" : "logistic");
  set_shape(graph->add_input(), "input", onnx::TensorProto::FLOAT, inputs);
  auto* node = graph->add_node();
  node->set_op_type(op);
  node->set_domain("ai.onnx.ml");
  node->add_input("input");
  add_float_attribute(*node, "coefficients", coefficients);
  add_float_attribute(*node, "intercepts", intercepts);
  if (op == "LinearRegressor") {
    node->add_output("variable");
    auto* targets = node->add_attribute();
    targets->set_name("targets");
    targets->set_type(onnx::AttributeProto::INT);
    targets->set_i(1);
    set_shape(graph->add_output(), "variable", onnx::TensorProto::FLOAT, 1);
  } else {
    node->add_output("label");
    node->add_output("probabilities");
    auto* labels = node->add_attribute();
    labels->set_name("classlabels_ints");
    labels->set_type(onnx::AttributeProto::INTS);
    for (int k = 0; k < classes; ++k) labels->add_ints(k);
    auto* post = node->add_attribute();
    post->set_name("post_transform");
    post->set_type(onnx::AttributeProto::STRING);
    post->set_s("SOFTMAX");
    set_shape(graph->add_output(), "label", onnx::TensorProto::INT64, 0);
    set_shape(graph->add_output(), "probabilities", onnx::TensorProto::FLOAT, classes);
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) fail(ErrorCode::Internal, "could not serialize the ONNX model");
  return bytes;
}

void check_params(const nlohmann::json& params, const std::set<std::string>& known,
                  const std::string& algorithm) {
  for (const auto& [name, value] : params.items()) {
    if (known.count(name) == 0) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      fail(ErrorCode::InvalidInput, "unknown parameter \"" + name + "\" for algorithm '" + algorithm + "'",
           "Its parameters are " + names + ".");
    }
  }
}

// scikit-learn's multinomial LogisticRegression(C): min C * sum -log softmax(X W + b)_y + ||W||^2 / 2,
// by Newton's method on every class's weights and intercept at once. Returns (p + 1) x classes.
Eigen::MatrixXd fit_multinomial(const Eigen::MatrixXd& x, const Eigen::VectorXd& y, int classes, double c,
                                bool fit_intercept, int max_iter, double tol, const Request& request) {
  const Eigen::Index n = x.rows(), p = x.cols(), k = p + 1, m = classes;
  Eigen::MatrixXd xa(n, k);
  xa.leftCols(p) = x;
  xa.col(p).setConstant(fit_intercept ? 1.0 : 0.0);
  Eigen::MatrixXd onehot = Eigen::MatrixXd::Zero(n, m);
  for (Eigen::Index i = 0; i < n; ++i) onehot(i, static_cast<Eigen::Index>(y(i))) = 1;
  Eigen::VectorXd penalty = Eigen::VectorXd::Ones(k);
  penalty(p) = fit_intercept ? kInterceptRidge : 1.0;
  Eigen::MatrixXd theta = Eigen::MatrixXd::Zero(k, m);
  auto softmax = [&](const Eigen::MatrixXd& t, double* loss) {
    Eigen::MatrixXd z = xa * t;
    double total = 0;
    for (Eigen::Index i = 0; i < n; ++i) {
      const double top = z.row(i).maxCoeff();
      const double truth = z.row(i).dot(onehot.row(i));
      z.row(i) = (z.row(i).array() - top).exp();
      const double sum = z.row(i).sum();
      total += std::log(sum) + top - truth;
      z.row(i) /= sum;
    }
    if (loss) *loss = c * total + 0.5 * (penalty.asDiagonal() * t.array().square().matrix()).sum();
    return z;
  };
  for (int iteration = 0; iteration < max_iter; ++iteration) {
    poll_interrupt();
    double before = 0;
    const Eigen::MatrixXd prob = softmax(theta, &before);
    const Eigen::MatrixXd gradient = c * xa.transpose() * (prob - onehot) + penalty.asDiagonal() * theta;
    if (gradient.lpNorm<Eigen::Infinity>() <= tol) break;
    Eigen::MatrixXd hessian = Eigen::MatrixXd::Zero(k * m, k * m);
    for (Eigen::Index a = 0; a < m; ++a) {
      for (Eigen::Index b = a; b < m; ++b) {
        Eigen::VectorXd weight = -prob.col(a).cwiseProduct(prob.col(b));
        if (a == b) weight += prob.col(a);
        const Eigen::MatrixXd block = c * xa.transpose() * weight.asDiagonal() * xa;
        hessian.block(a * k, b * k, k, k) = block;
        hessian.block(b * k, a * k, k, k) = block.transpose();
      }
      hessian.block(a * k, a * k, k, k).diagonal() += penalty;
    }
    const Eigen::VectorXd flat = Eigen::Map<const Eigen::VectorXd>(gradient.data(), k * m);
    const Eigen::VectorXd step_flat = hessian.ldlt().solve(flat);
    const Eigen::MatrixXd step = Eigen::Map<const Eigen::MatrixXd>(step_flat.data(), k, m);
    double t = 1, after = 0;
    for (; t > 1e-12; t /= 2) {
      softmax(theta - t * step, &after);
      if (after <= before - 1e-4 * t * flat.dot(step_flat)) break;
    }
    theta -= t * step;
    if (request.on_progress) request.on_progress(Progress{iteration + 1, max_iter, std::nan(""), {}});
  }
  return theta;
}

}  // namespace

Result train_linear(const TrainingData& data, const Request& request) {
  const bool logistic = request.algorithm == "logistic";
  const nlohmann::json& params = request.params;
  check_params(params,
               logistic ? std::set<std::string>{"C", "fit_intercept", "max_iter", "tol"}
                        : std::set<std::string>{"alpha", "fit_intercept"},
               request.algorithm);
  bool fit_intercept = true;
  if (params.contains("fit_intercept")) {
    if (!params["fit_intercept"].is_boolean())
      fail(ErrorCode::InvalidInput, "parameter fit_intercept must be true or false");
    fit_intercept = params["fit_intercept"].get<bool>();
  }
  const Split split = split_rows(data, request.test_fraction, request.seed);
  if (split.train.empty())
    fail(ErrorCode::InvalidInput, "no rows are left for training after holding out the test rows",
         "Lower test_fraction or train on more rows.");
  const Eigen::MatrixXd x = design(data, split.train);
  Eigen::VectorXd y(static_cast<Eigen::Index>(split.train.size()));
  for (std::size_t i = 0; i < split.train.size(); ++i)
    y(static_cast<Eigen::Index>(i)) = data.target[static_cast<std::size_t>(split.train[i])];
  const Eigen::Index p = x.cols();
  Eigen::VectorXd w = Eigen::VectorXd::Zero(p);
  double b = 0;
  int classes = 0;
  Eigen::MatrixXd multinomial;  // (p + 1) x classes: weights over the intercept row, more than two classes
  Result result;
  result.params = params;
  result.params["fit_intercept"] = fit_intercept;
  poll_interrupt();

  if (!logistic) {
    const double alpha = number_param(params, "alpha", 1.0, false);
    result.params["alpha"] = alpha;
    Eigen::RowVectorXd x_mean = Eigen::RowVectorXd::Zero(p);
    double y_mean = 0;
    if (fit_intercept) {
      x_mean = x.colwise().mean();
      y_mean = y.mean();
    }
    const Eigen::MatrixXd xc = x.rowwise() - x_mean;
    Eigen::MatrixXd gram = xc.transpose() * xc;
    gram.diagonal().array() += alpha;
    w = gram.ldlt().solve(xc.transpose() * (y.array() - y_mean).matrix());
    b = fit_intercept ? y_mean - x_mean.dot(w) : 0;
    result.metrics = nlohmann::json::object();
  } else {
    for (const float v : data.target) {
      if (!(v >= 0 && v < kMaxClasses && v == std::floor(v)))
        fail(ErrorCode::InvalidInput,
             "the target of algorithm 'logistic' must be a class number 0, 1, 2, ...",
             "Map the classes to 0 .. K-1 in the query, e.g. CASE species WHEN 'setosa' THEN 0 ... END.");
      classes = std::max(classes, static_cast<int>(v) + 1);
    }
    classes = std::max(classes, 2);
    const double c = number_param(params, "C", 1.0, true);
    const int max_iter = static_cast<int>(number_param(params, "max_iter", kDefaultMaxIterations, true));
    const double tol = number_param(params, "tol", kDefaultTolerance, true);
    result.params["C"] = c;
    result.params["max_iter"] = max_iter;
    result.params["tol"] = tol;
    if (classes > 2) {
      multinomial = fit_multinomial(x, y, classes, c, fit_intercept, max_iter, tol, request);
      result.metrics = nlohmann::json::object();
    } else {
      // theta = [w; b]; the objective's gradient and Hessian, Newton steps with backtracking.
      const Eigen::Index k = p + 1;
      Eigen::MatrixXd xa(x.rows(), k);
      xa.leftCols(p) = x;
      xa.col(p).setConstant(fit_intercept ? 1.0 : 0.0);
      Eigen::VectorXd theta = Eigen::VectorXd::Zero(k);
      Eigen::VectorXd penalty = Eigen::VectorXd::Ones(k);
      penalty(p) =
          fit_intercept ? 0.0 : 1.0;  // without an intercept its (zero) coordinate is held by the penalty
      auto objective = [&](const Eigen::VectorXd& t) {
        const Eigen::VectorXd z = xa * t;
        double loss = 0;
        for (Eigen::Index i = 0; i < z.size(); ++i) {
          const double zi = z(i);
          loss += (zi > 0 ? zi + std::log1p(std::exp(-zi)) : std::log1p(std::exp(zi))) - y(i) * zi;
        }
        return c * loss + 0.5 * (penalty.array() * t.array().square()).sum();
      };
      int iterations = 0;
      for (; iterations < max_iter; ++iterations) {
        poll_interrupt();
        const Eigen::VectorXd z = xa * theta;
        const Eigen::VectorXd prob = (1.0 / (1.0 + (-z.array()).exp())).matrix();
        const Eigen::VectorXd gradient = c * (xa.transpose() * (prob - y)) + penalty.cwiseProduct(theta);
        if (gradient.lpNorm<Eigen::Infinity>() <= tol) break;
        const Eigen::VectorXd s = (prob.array() * (1 - prob.array())).matrix();
        Eigen::MatrixXd hessian = c * (xa.transpose() * s.asDiagonal() * xa);
        hessian.diagonal() += penalty;
        const Eigen::VectorXd step = hessian.ldlt().solve(gradient);
        const double before = objective(theta);
        double t = 1;
        while (t > 1e-12 && objective(theta - t * step) > before - 1e-4 * t * gradient.dot(step)) t /= 2;
        theta -= t * step;
        if (request.on_progress) request.on_progress(Progress{iterations + 1, max_iter, std::nan(""), {}});
      }
      w = theta.head(p);
      b = fit_intercept ? theta(p) : 0;
      result.metrics = {{"iterations", iterations}};
    }
  }

  std::vector<float> coefficients;
  std::vector<float> intercepts;
  if (!logistic) {
    for (Eigen::Index j = 0; j < p; ++j) coefficients.push_back(static_cast<float>(w(j)));
    intercepts.push_back(static_cast<float>(b));
  } else if (classes > 2) {
    for (int k = 0; k < classes; ++k)
      for (Eigen::Index j = 0; j < p; ++j) coefficients.push_back(static_cast<float>(multinomial(j, k)));
    for (int k = 0; k < classes; ++k) intercepts.push_back(static_cast<float>(multinomial(p, k)));
  } else {
    // softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]: class 0 scores 0, class 1 scores Xw + b.
    coefficients.assign(static_cast<std::size_t>(p), 0.0f);
    for (Eigen::Index j = 0; j < p; ++j) coefficients.push_back(static_cast<float>(w(j)));
    intercepts = {0.0f, static_cast<float>(b)};
  }
  result.model =
      onnx_model(logistic ? "LinearClassifier" : "LinearRegressor", p, coefficients, intercepts, classes);
  result.format = "onnx";

  // Metrics in double precision with the fitted coefficients.
  if (!split.test.empty()) {
    const Eigen::MatrixXd xt = design(data, split.test);
    std::vector<float> truth;
    for (auto r : split.test) truth.push_back(data.target[static_cast<std::size_t>(r)]);
    if (classes > 2) {
      const Eigen::MatrixXd scores = (xt * multinomial.topRows(p)).rowwise() + multinomial.row(p);
      std::vector<double> probabilities;
      for (Eigen::Index i = 0; i < scores.rows(); ++i) {
        const Eigen::RowVectorXd e = (scores.row(i).array() - scores.row(i).maxCoeff()).exp();
        for (Eigen::Index k = 0; k < e.size(); ++k) probabilities.push_back(e(k) / e.sum());
      }
      result.metrics.update(evaluate("multiclass", truth, probabilities, classes));
    }
    const Eigen::VectorXd z = (xt * w).array() + b;
    std::vector<double> predicted(static_cast<std::size_t>(z.size()));
    for (Eigen::Index i = 0; i < z.size(); ++i)
      predicted[static_cast<std::size_t>(i)] = logistic ? 1.0 / (1.0 + std::exp(-z(i))) : z(i);
    if (classes <= 2)
      result.metrics.update(evaluate(logistic ? "binary" : "regression", truth, predicted, 0));
  } else {
    result.metrics["test_rows"] = 0;
  }
  result.metrics["train_rows"] = split.train.size();
  result.environment = {{"eigen", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                      std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                      std::to_string(EIGEN_MINOR_VERSION)}};
  return result;
}

}  // namespace flock::train
