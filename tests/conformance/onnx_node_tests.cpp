// Runs the ONNX backend node tests (Debian's libonnx-testdata) against the core runtime and prints
// a per-operator table. A case is skipped when its graph uses an element type Flock does not run,
// or an operator Flock does not claim; every other case must pass.
//
//   flock_onnx_conformance [--data DIR] [--op OP]... [--case SUBSTRING] [-v] [--markdown FILE]
//
// Cases in the same layout written by tests/conformance/newer_opsets.py (ai.onnx 18-21, ai.onnx.ml
// 4-5) may also hold `reference.onnx`, another model the outputs must equal bit for bit on the same
// inputs (a TreeEnsemble against the TreeEnsembleRegressor it was converted from), or
// or reference.json, an XGBoost model (through Flock's XGBoost importer), or
// `expect_error`, the ErrorCode name and a piece of the message loading must fail with.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "flock/kernel.hpp"
#include "flock/model.hpp"
#include "flock/onnx.hpp"

namespace {

struct Options {
  std::string data = "/usr/share/libonnx-testdata/data/node";
  std::set<std::string> ops;
  std::string case_filter;
  bool verbose = false;
  std::string markdown;
};

struct Counts {
  int passed = 0, failed = 0, skipped = 0;
};

enum class Outcome { Passed, Failed, Skipped };

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> out;
  if (DIR* d = opendir(path.c_str())) {
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool supported_elem(int32_t t) {
  using TP = onnx::TensorProto;
  return t == TP::FLOAT || t == TP::DOUBLE || t == TP::INT64 || t == TP::BOOL || t == TP::STRING;
}

// Why a value type is out of scope, or "" when Flock runs it.
std::string type_gap(const onnx::TypeProto& t) {
  if (!t.has_tensor_type()) return "non-tensor value";
  if (!supported_elem(t.tensor_type().elem_type()))
    return "element type " + onnx::TensorProto::DataType_Name(
                                 static_cast<onnx::TensorProto::DataType>(t.tensor_type().elem_type()));
  return "";
}

std::string node_op(const onnx::NodeProto& n) {
  return (n.domain().empty() || n.domain() == "ai.onnx") ? n.op_type() : n.domain() + ":" + n.op_type();
}

// The operator a case tests: its node's, or for a function expanded into several nodes, the
// operator named by the case ("test_softmax_axis_0_expanded" → "Softmax (expanded)").
std::string case_op(const onnx::ModelProto& m, const std::string& name) {
  if (m.graph().node_size() == 1) return node_op(m.graph().node(0));
  std::string op = name.rfind("test_", 0) == 0 ? name.substr(5) : name;
  return "(expanded) " + op.substr(0, op.find('_'));
}

bool close_enough(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  if (std::isinf(want)) return got == want;
  // The ONNX backend test defaults: rtol 1e-3, atol 1e-7.
  return std::fabs(got - want) <= 1e-7 + 1e-3 * std::fabs(want);
}

std::string compare(const flock::Tensor& got, const flock::Tensor& want) {
  if (got.type != want.type)
    return std::string("type ") + flock::to_string(got.type) + ", expected " + flock::to_string(want.type);
  if (got.numel() != want.numel() || (got.shape != want.shape && !(got.shape.empty() && want.numel() == 1) &&
                                      !(want.shape.empty() && got.numel() == 1))) {
    std::string g, w;
    for (auto d : got.shape) g += std::to_string(d) + ",";
    for (auto d : want.shape) w += std::to_string(d) + ",";
    return "shape [" + g + "], expected [" + w + "]";
  }
  for (size_t k = 0; k < want.size(); ++k) {
    bool ok;
    if (want.type == flock::ElemType::String) ok = got.s[k] == want.s[k];
    else if (want.type == flock::ElemType::Int64) ok = got.i[k] == want.i[k];
    else if (want.type == flock::ElemType::Bool) ok = got.b[k] == want.b[k];
    else ok = close_enough(got.as_double(k), want.as_double(k));
    if (!ok) {
      std::ostringstream s;
      s << "value " << k << ": got ";
      if (want.type == flock::ElemType::String) s << got.s[k] << ", expected " << want.s[k];
      else s << got.as_double(k) << ", expected " << want.as_double(k);
      return s.str();
    }
  }
  return "";
}

flock::Tensor load_tensor(const std::string& path) {
  onnx::TensorProto p;
  std::string bytes = read_file(path);
  if (!p.ParseFromString(bytes)) throw std::runtime_error("cannot parse " + path);
  return flock::tensor_from_proto(p);
}

const char* code_name(flock::ErrorCode c) {
  switch (c) {
    case flock::ErrorCode::InvalidModel: return "InvalidModel";
    case flock::ErrorCode::UnsupportedOperator: return "UnsupportedOperator";
    case flock::ErrorCode::InvalidInput: return "InvalidInput";
    case flock::ErrorCode::MissingValue: return "MissingValue";
    case flock::ErrorCode::TypeMismatch: return "TypeMismatch";
    case flock::ErrorCode::LimitExceeded: return "LimitExceeded";
    case flock::ErrorCode::Cancelled: return "Cancelled";
    case flock::ErrorCode::Internal: return "Internal";
  }
  return "?";
}

std::shared_ptr<const flock::Model> load_model(const std::string& bytes,
                                               flock::ModelFormat format = flock::ModelFormat::Onnx) {
  return flock::Model::load(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                            format);
}

// `expect_error`: "<ErrorCode name>\n<part of the message>".
Outcome run_error_case(const std::string& dir, const std::string& bytes, std::string& why) {
  std::istringstream spec(read_file(dir + "/expect_error"));
  std::string code, part;
  std::getline(spec, code);
  std::getline(spec, part);
  try {
    load_model(bytes);
  } catch (const flock::Error& e) {
    const std::string what = e.what();
    if (code_name(e.code()) == code && what.find(part) != std::string::npos) return Outcome::Passed;
    why = std::string("failed with ") + code_name(e.code()) + " \"" + what + "\", expected " + code + " \"" + part +
          "\"";
    return Outcome::Failed;
  }
  why = "loaded; expected " + code + " \"" + part + "\"";
  return Outcome::Failed;
}

// Bit for bit (NaN equal to NaN).
std::string compare_exact(const flock::Tensor& got, const flock::Tensor& want) {
  if (got.type != want.type || got.shape != want.shape) return compare(got, want);
  for (size_t k = 0; k < want.size(); ++k) {
    const double g = got.as_double(k), w = want.as_double(k);
    if (g == w || (std::isnan(g) && std::isnan(w))) continue;
    std::ostringstream s;
    s.precision(17);
    s << "value " << k << ": got " << g << ", the reference model gives " << w;
    return s.str();
  }
  return "";
}

Outcome run_case(const std::string& dir, const std::string& name, const std::set<std::string>& claimed,
                 std::string& op, std::string& why) {
  onnx::ModelProto m;
  std::string bytes = read_file(dir + "/model.onnx");
  if (!m.ParseFromString(bytes)) {
    why = "model.onnx does not parse";
    return Outcome::Failed;
  }
  op = case_op(m, name);
  if (exists(dir + "/expect_error")) return run_error_case(dir, bytes, why);
  for (const auto& imp : m.opset_import()) {
    if ((imp.domain().empty() || imp.domain() == "ai.onnx") && (imp.version() < 7 || imp.version() > 21)) {
      why = "opset " + std::to_string(imp.version()) + " outside the supported 7-21";
      return Outcome::Skipped;
    }
  }
  for (const auto& n : m.graph().node()) {
    if (!claimed.count(node_op(n))) {
      why = "operator " + node_op(n) + " not claimed";
      return Outcome::Skipped;
    }
  }
  for (const auto* list : {&m.graph().input(), &m.graph().output()}) {
    for (const auto& vi : *list) {
      if (std::string gap = type_gap(vi.type()); !gap.empty()) {
        why = vi.name() + ": " + gap;
        return Outcome::Skipped;
      }
    }
  }
  try {
    auto model = load_model(bytes);
    std::shared_ptr<const flock::Model> reference;
    if (exists(dir + "/reference.onnx")) reference = load_model(read_file(dir + "/reference.onnx"));
    if (exists(dir + "/reference.json"))  // an XGBoost model, through Flock's XGBoost importer
      reference = load_model(read_file(dir + "/reference.json"), flock::ModelFormat::XGBoostJson);
    int sets = 0;
    for (const auto& set : list_dir(dir)) {
      if (set.rfind("test_data_set_", 0) != 0) continue;
      ++sets;
      std::string sdir = dir + "/" + set;
      std::vector<flock::Tensor> inputs;
      int n_graph_inputs = 0;
      for (const auto& vi : m.graph().input()) {
        bool is_init = false;
        for (const auto& init : m.graph().initializer()) is_init = is_init || init.name() == vi.name();
        if (!is_init) ++n_graph_inputs;
      }
      for (int k = 0; k < n_graph_inputs; ++k) {
        std::string p = sdir + "/input_" + std::to_string(k) + ".pb";
        if (!exists(p)) break;
        inputs.push_back(load_tensor(p));
      }
      std::vector<flock::Tensor> reference_inputs;
      if (reference) reference_inputs = inputs;
      auto outputs = model->run_tensors(std::move(inputs));
      if (reference) {
        auto expected = reference->run_tensors(std::move(reference_inputs));
        for (size_t k = 0; k < outputs.size() && k < expected.size(); ++k)
          if (std::string diff = compare_exact(outputs[k], expected[k]); !diff.empty()) {
            why = set + " output " + std::to_string(k) + ": " + diff;
            return Outcome::Failed;
          }
      }
      for (size_t k = 0; k < outputs.size(); ++k) {
        std::string p = sdir + "/output_" + std::to_string(k) + ".pb";
        if (!exists(p)) continue;
        if (std::string diff = compare(outputs[k], load_tensor(p)); !diff.empty()) {
          why = set + " output " + std::to_string(k) + ": " + diff;
          return Outcome::Failed;
        }
      }
    }
    if (sets == 0) {
      why = "no test data";
      return Outcome::Skipped;
    }
  } catch (const flock::Error& e) {
    why = e.what();
    return Outcome::Failed;
  } catch (const std::exception& e) {
    why = std::string("exception: ") + e.what();
    return Outcome::Failed;
  }
  return Outcome::Passed;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    auto next = [&]() -> std::string {
      if (k + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++k];
    };
    if (a == "--data") opt.data = next();
    else if (a == "--op") opt.ops.insert(next());
    else if (a == "--case") opt.case_filter = next();
    else if (a == "-v" || a == "--verbose") opt.verbose = true;
    else if (a == "--markdown") opt.markdown = next();
    else {
      std::cerr << "usage: flock_onnx_conformance [--data DIR] [--op OP]... [--case SUBSTRING] [-v] [--markdown FILE]\n";
      return 2;
    }
  }
  if (!exists(opt.data)) {
    std::cerr << "flock_onnx_conformance: no test data at " << opt.data << " (apt-get install libonnx-testdata)\n";
    return 1;
  }

  std::set<std::string> claimed;
  for (const auto& s : flock::KernelRegistry::instance().supported()) claimed.insert(s);
  claimed.insert("Constant");  // compiled into the plan, not a kernel

  std::map<std::string, Counts> by_op;
  std::map<std::string, std::vector<std::string>> failures;
  Counts total;
  for (const auto& name : list_dir(opt.data)) {
    if (!opt.case_filter.empty() && name.find(opt.case_filter) == std::string::npos) continue;
    std::string op, why;
    Outcome o = run_case(opt.data + "/" + name, name, claimed, op, why);
    if (!opt.ops.empty()) {
      std::string base = op.rfind("(expanded) ", 0) == 0 ? "" : op;
      bool match = opt.ops.count(base) > 0;
      for (const auto& want : opt.ops) {
        std::string lower = want;
        std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
        match = match || name.rfind("test_" + lower, 0) == 0;
      }
      if (!match) continue;
    }
    Counts& c = by_op[op];
    switch (o) {
      case Outcome::Passed: c.passed++; total.passed++; break;
      case Outcome::Failed: c.failed++; total.failed++; failures[op].push_back(name + ": " + why); break;
      case Outcome::Skipped: c.skipped++; total.skipped++; break;
    }
    if (opt.verbose)
      std::printf("%-7s %s%s%s\n", o == Outcome::Passed ? "PASS" : o == Outcome::Failed ? "FAIL" : "skip",
                  name.c_str(), why.empty() ? "" : "  — ", why.c_str());
  }

  // Table: claimed operators first (those with a pass or failure), then the rest.
  std::printf("\n%-40s %7s %7s %8s\n", "operator", "passed", "failed", "skipped");
  std::printf("%-40s %7s %7s %8s\n", std::string(40, '-').c_str(), "------", "------", "-------");
  for (const auto& [op, c] : by_op) {
    if (c.passed + c.failed == 0) continue;
    std::printf("%-40s %7d %7d %8d\n", op.c_str(), c.passed, c.failed, c.skipped);
  }
  int unclaimed = 0;
  for (const auto& [op, c] : by_op) unclaimed += (c.passed + c.failed == 0);
  std::printf("(%d more operators with every case skipped: not claimed, or unsupported element types)\n", unclaimed);
  for (const auto& [op, list] : failures)
    for (const auto& f : list) std::printf("FAILED %s\n", f.c_str());
  std::printf("\nONNX node tests: %d passed, %d failed, %d skipped\n", total.passed, total.failed, total.skipped);
  // The plain closing line CI reads.
  std::printf("%d passed, %d failed, %d skipped\n", total.passed, total.failed, total.skipped);

  if (!opt.markdown.empty()) {
    std::ofstream md(opt.markdown);
    if (opt.data == Options().data)
      md << "# ONNX backend node test coverage\n\n"
         << "Generated by `flock_onnx_conformance --markdown` from Debian's libonnx-testdata "
         << "(`" << opt.data << "`). A case is *skipped* when its graph uses an operator Flock does not "
         << "claim, or an element type Flock does not run (Flock runs float32, float64, int64, bool and "
         << "string tensors). Every other case must pass; claiming an operator means passing its tests.\n\n";
    else
      md << "# Coverage of the ONNX versions newer than libonnx 1.12\n\n"
         << "Generated by `flock_onnx_conformance --data DIR --markdown` from the cases "
         << "`tests/conformance/newer_opsets.py --out DIR --models build/models` writes (`make conformance`): "
         << "models at ai.onnx opsets 18-21 and ai.onnx.ml 4-5 built with onnx.helper, their outputs "
         << "computed with numpy from the ONNX specification's formulas, tree models converted to "
         << "TreeEnsemble that must give their original's bits, and bad models that must fail with a "
         << "given error (a case named after the operator of its single node, or `(expanded)` and its "
         << "name for several nodes).\n\n";
    md
       << "Totals: " << total.passed << " passed, " << total.failed << " failed, " << total.skipped
       << " skipped.\n\n| operator | passed | failed | skipped |\n| --- | ---: | ---: | ---: |\n";
    for (const auto& [op, c] : by_op)
      if (c.passed + c.failed > 0) md << "| " << op << " | " << c.passed << " | " << c.failed << " | " << c.skipped << " |\n";
    md << "\nOperators whose every case is skipped:\n\n";
    bool first = true;
    for (const auto& [op, c] : by_op) {
      if (c.passed + c.failed > 0) continue;
      md << (first ? "" : ", ") << op;
      first = false;
    }
    md << "\n";
  }
  return total.failed == 0 ? 0 : 1;
}
