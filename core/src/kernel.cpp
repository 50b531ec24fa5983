#include "flock/kernel.hpp"

#include "flock/checked.hpp"

#include <fmt/format.h>

#include <cstring>

namespace flock {

Attrs::Attrs(const onnx::NodeProto& node) : node_(node) {}

std::string Attrs::where() const {
  if (node_.name().empty()) return node_.op_type();
  return fmt::format("{} '{}'", node_.op_type(), node_.name());
}

const onnx::AttributeProto* Attrs::find(const std::string& name) const {
  for (const auto& a : node_.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

bool Attrs::has(const std::string& name) const { return find(name) != nullptr; }

int64_t Attrs::get_int(const std::string& name) const {
  const auto* a = find(name);
  if (!a) fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute '{}'", where(), name));
  return a->i();
}

int64_t Attrs::get_int(const std::string& name, int64_t dflt) const {
  const auto* a = find(name);
  return a ? a->i() : dflt;
}

float Attrs::get_float(const std::string& name) const {
  const auto* a = find(name);
  if (!a) fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute '{}'", where(), name));
  return a->f();
}

float Attrs::get_float(const std::string& name, float dflt) const {
  const auto* a = find(name);
  return a ? a->f() : dflt;
}

std::string Attrs::get_string(const std::string& name) const {
  const auto* a = find(name);
  if (!a) fail(ErrorCode::InvalidModel, fmt::format("{} lacks required attribute '{}'", where(), name));
  return a->s();
}

std::string Attrs::get_string(const std::string& name, const std::string& dflt) const {
  const auto* a = find(name);
  return a ? a->s() : dflt;
}

std::vector<int64_t> Attrs::get_ints(const std::string& name) const {
  const auto* a = find(name);
  if (!a) return {};
  return {a->ints().begin(), a->ints().end()};
}

std::vector<float> Attrs::get_floats(const std::string& name) const {
  const auto* a = find(name);
  if (!a) return {};
  return {a->floats().begin(), a->floats().end()};
}

std::vector<std::string> Attrs::get_strings(const std::string& name) const {
  const auto* a = find(name);
  if (!a) return {};
  return {a->strings().begin(), a->strings().end()};
}

Tensor Attrs::get_tensor(const std::string& name) const {
  const auto* a = find(name);
  if (!a || !a->has_t())
    fail(ErrorCode::InvalidModel, fmt::format("{} lacks tensor attribute '{}'", where(), name));
  return tensor_from_proto(a->t());
}

std::vector<double> Attrs::get_doubles_or_floats(const std::string& name) const {
  const auto* t = find(name + "_as_tensor");
  if (t && t->has_t()) {
    Tensor tensor = tensor_from_proto(t->t());
    std::vector<double> out(tensor.size());
    for (size_t k = 0; k < out.size(); ++k) out[k] = tensor.as_double(k);
    return out;
  }
  std::vector<float> f = get_floats(name);
  return {f.begin(), f.end()};
}

KernelRegistry& KernelRegistry::instance() {
  static KernelRegistry* registry = [] {
    auto* r = new KernelRegistry();
    register_ml_linear_kernels(*r);
    register_ml_tree_kernels(*r);
    register_ml_preprocess_kernels(*r);
    register_standard_kernels(*r);
    register_elementwise_kernels(*r);
    register_tensor_kernels(*r);
    register_nn_kernels(*r);
    return r;
  }();
  return *registry;
}

void KernelRegistry::add(const std::string& domain, const std::string& op_type, KernelFactory factory) {
  factories_[{domain, op_type}] = std::move(factory);
}

const KernelFactory* KernelRegistry::find(const std::string& domain, const std::string& op_type) const {
  // "ai.onnx" is another spelling of the default domain.
  const std::string& d = (domain == "ai.onnx") ? std::string() : domain;
  auto it = factories_.find({d, op_type});
  return it == factories_.end() ? nullptr : &it->second;
}

std::vector<std::string> KernelRegistry::supported() const {
  std::vector<std::string> out;
  for (const auto& [key, _] : factories_) {
    out.push_back(key.first.empty() ? key.second : key.first + ":" + key.second);
  }
  return out;
}

namespace {

template <typename T>
void copy_raw(const onnx::TensorProto& proto, std::vector<T>& out, size_t n) {
  const std::string& raw = proto.raw_data();
  const size_t need = checked_bytes(static_cast<int64_t>(n), sizeof(T), "tensor raw_data size", ErrorCode::InvalidModel);
  if (raw.size() != need)
    fail(ErrorCode::InvalidModel,
         fmt::format("tensor '{}' raw_data has {} bytes, its shape needs {}", proto.name(), raw.size(), need));
  out.resize(n);
  if (n) std::memcpy(out.data(), raw.data(), raw.size());
}

}  // namespace

Tensor tensor_from_proto(const onnx::TensorProto& proto) {
  Tensor t;
  t.shape.assign(proto.dims().begin(), proto.dims().end());
  for (int64_t d : t.shape) {
    if (d < 0) fail(ErrorCode::InvalidModel, fmt::format("tensor '{}' has a negative dimension", proto.name()));
  }
  if (proto.data_location() == onnx::TensorProto::EXTERNAL)
    fail(ErrorCode::InvalidModel, fmt::format("tensor '{}' keeps its data in an external file", proto.name()),
         "Save the model with all tensors inside the file (no external data).");
  // The element count must not wrap: a huge declared shape over a few bytes of data would pass the
  // size checks below and let kernels index far past the data.
  const size_t n = static_cast<size_t>(
      checked_numel(t.shape, fmt::format("tensor '{}'", proto.name()), ErrorCode::InvalidModel));
  // Every form of data below is at most as long as the bytes it came from, so a count past that is
  // rejected before anything is allocated for it.
  const size_t stored = proto.raw_data().size() + static_cast<size_t>(proto.float_data_size()) +
                        static_cast<size_t>(proto.double_data_size()) + static_cast<size_t>(proto.int64_data_size()) +
                        static_cast<size_t>(proto.int32_data_size()) + static_cast<size_t>(proto.string_data_size());
  if (n > stored)
    fail(ErrorCode::InvalidModel,
         fmt::format("tensor '{}' has shape [{}] ({} values) but holds only {} bytes / values of data", proto.name(),
                     fmt::join(t.shape, ", "), n, stored));
  const bool raw = proto.has_raw_data();
  using TP = onnx::TensorProto;
  switch (proto.data_type()) {
    case TP::FLOAT:
      t.type = ElemType::Float;
      if (raw) copy_raw(proto, t.f, n);
      else t.f.assign(proto.float_data().begin(), proto.float_data().end());
      break;
    case TP::DOUBLE:
      t.type = ElemType::Double;
      if (raw) copy_raw(proto, t.d, n);
      else t.d.assign(proto.double_data().begin(), proto.double_data().end());
      break;
    case TP::INT64:
      t.type = ElemType::Int64;
      if (raw) copy_raw(proto, t.i, n);
      else t.i.assign(proto.int64_data().begin(), proto.int64_data().end());
      break;
    case TP::INT32: case TP::INT16: case TP::INT8: case TP::UINT8: case TP::UINT16: {
      t.type = ElemType::Int64;
      if (raw) {
        size_t width = proto.data_type() == TP::INT32 ? 4 : (proto.data_type() == TP::INT16 || proto.data_type() == TP::UINT16) ? 2 : 1;
        if (proto.raw_data().size() != checked_bytes(static_cast<int64_t>(n), width, "tensor raw_data size",
                                                     ErrorCode::InvalidModel))
          fail(ErrorCode::InvalidModel, fmt::format("tensor '{}' raw_data size does not match its shape", proto.name()));
        t.i.resize(n);
        const char* p = proto.raw_data().data();
        for (size_t k = 0; k < n; ++k) {
          switch (proto.data_type()) {
            case TP::INT32: { int32_t v; std::memcpy(&v, p + 4 * k, 4); t.i[k] = v; break; }
            case TP::INT16: { int16_t v; std::memcpy(&v, p + 2 * k, 2); t.i[k] = v; break; }
            case TP::UINT16: { uint16_t v; std::memcpy(&v, p + 2 * k, 2); t.i[k] = v; break; }
            case TP::INT8: t.i[k] = static_cast<int8_t>(p[k]); break;
            default: t.i[k] = static_cast<uint8_t>(p[k]); break;
          }
        }
      } else {
        t.i.assign(proto.int32_data().begin(), proto.int32_data().end());
      }
      break;
    }
    case TP::BOOL:
      t.type = ElemType::Bool;
      if (raw) copy_raw(proto, t.b, n);
      else for (int32_t v : proto.int32_data()) t.b.push_back(v != 0);
      break;
    case TP::STRING:
      t.type = ElemType::String;
      t.s.assign(proto.string_data().begin(), proto.string_data().end());
      break;
    default:
      fail(ErrorCode::UnsupportedOperator,
           fmt::format("tensor '{}' has element type {}, which Flock does not support", proto.name(),
                       TP::DataType_Name(static_cast<TP::DataType>(proto.data_type()))));
  }
  if (t.size() != n)
    fail(ErrorCode::InvalidModel,
         fmt::format("tensor '{}' holds {} values, its shape needs {}", proto.name(), t.size(), n));
  return t;
}

}  // namespace flock
