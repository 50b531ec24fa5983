#include "dense_layer.hpp"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "flock/interrupt.hpp"
#include "gemm.hpp"
#include "kernel_io.hpp"

namespace flock::kernels {
namespace {

// Rows per primitive call: batches are cut into blocks of this many rows (one primitive, the
// last block another), so a few primitives serve every batch size and a large batch polls for
// interrupts between blocks.
constexpr int64_t kBlockRows = 256;
// Narrower outputs (e.g. a final score) run faster as a plain GEMM / matrix-vector product.
constexpr int64_t kMinOutputs = 8;
// Primitives kept per layer (one per block height seen: the block and the tails).
constexpr size_t kMaxPrimitives = 16;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

class DenseLayer final : public Kernel {
 public:
  DenseLayer(const Attrs& attrs, const Tensor& b, const Tensor* c, std::shared_ptr<const Kernel> generic, bool relu)
      : generic_(std::move(generic)), relu_(relu), where_(attrs.where()) {
    const bool trans_b = attrs.get_int("transB", 0) != 0;
    const float alpha = attrs.get_float("alpha", 1.0f);
    const float beta = attrs.get_float("beta", 1.0f);
    k_ = trans_b ? b.shape[1] : b.shape[0];
    n_ = trans_b ? b.shape[0] : b.shape[1];
    // Weights as [N, K] ("oi"), alpha folded in; the bias as N values, beta folded in.
    std::vector<float> w(static_cast<size_t>(n_ * k_));
    for (int64_t o = 0; o < n_; ++o)
      for (int64_t i = 0; i < k_; ++i)
        w[o * k_ + i] = alpha * (trans_b ? b.f[o * k_ + i] : b.f[i * n_ + o]);
    bias_.assign(static_cast<size_t>(n_), 0.0f);
    if (c && beta != 0.0f)
      for (int64_t o = 0; o < n_; ++o) bias_[o] = beta * c->f[c->numel() == 1 ? 0 : o];
    // The weight layout is chosen once, by the primitive for a full block, and kept for every
    // block height, so the weights are reordered once.
    single_thread_openmp();
    std::shared_ptr<Block> full = make_block(kBlockRows, nullptr);
    blocks_[kBlockRows] = full;
    dnnl::memory plain({{n_, k_}, dt::f32, tag::oi}, cpu_engine(), w.data());
    weights_ = dnnl::memory(full->pd.weights_desc(), cpu_engine());
    dnnl::stream stream(cpu_engine());
    dnnl::reorder(plain, weights_).execute(stream, plain, weights_);
    stream.wait();
    weights_bytes_ = full->pd.weights_desc().get_size();
  }

  void run(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const override {
    const Tensor* a = in.empty() ? nullptr : in[0];
    if (!a || a->type != ElemType::Float || a->shape.size() != 2 || a->shape[1] != k_) {
      fallback(in, out);
      return;
    }
    const int64_t m = a->shape[0];
    Tensor y = Tensor::uninitialized(ElemType::Float, {m, n_});
    try {
      single_thread_openmp();
      dnnl::stream stream(cpu_engine());
      for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {
        poll_interrupt();
        const int64_t rows = std::min(kBlockRows, m - r0);
        const std::shared_ptr<Block> blk = find_block(rows);
        dnnl::memory src(blk->pd.src_desc(), cpu_engine(), const_cast<float*>(a->f.data() + r0 * k_));
        dnnl::memory dst(blk->pd.dst_desc(), cpu_engine(), y.f.data() + r0 * n_);
        dnnl::memory bias(blk->pd.bias_desc(), cpu_engine(), const_cast<float*>(bias_.data()));
        blk->prim.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights_}, {DNNL_ARG_BIAS, bias},
                                   {DNNL_ARG_DST, dst}});
        stream.wait();
        // Relu on the block while it is in cache. Not oneDNN's Relu post-op: that maps NaN to 0,
        // and Flock's Relu (the ONNX definition) passes NaN through.
        if (relu_)
          for (float *v = y.f.data() + r0 * n_, *end = v + rows * n_; v != end; ++v) *v = *v < 0.0f ? 0.0f : *v;
      }
    } catch (const dnnl::error&) {
      fallback(in, out);
      return;
    }
    out[0] = std::move(y);
  }

  size_t memory_bytes() const override { return weights_bytes_ + bias_.size() * sizeof(float); }

 private:
  struct Block {
    dnnl::inner_product_forward::primitive_desc pd;
    dnnl::inner_product_forward prim;
  };

  // The primitive for `rows`-row blocks; `weights` fixes the weight layout (nullptr: oneDNN picks).
  std::shared_ptr<Block> make_block(int64_t rows, const dnnl::memory::desc* weights) const {
    dnnl::memory::desc src({rows, k_}, dt::f32, tag::nc);
    dnnl::memory::desc w = weights ? *weights : dnnl::memory::desc({n_, k_}, dt::f32, tag::any);
    dnnl::memory::desc bias({n_}, dt::f32, tag::x);
    dnnl::memory::desc dst({rows, n_}, dt::f32, tag::nc);
    dnnl::inner_product_forward::primitive_desc pd({dnnl::prop_kind::forward_inference, src, w, bias, dst},
                                                   cpu_engine());
    return std::make_shared<Block>(Block{pd, dnnl::inner_product_forward(pd)});
  }

  // Shared, so a tail height dropped from the cache stays alive for a run still using it.
  std::shared_ptr<Block> find_block(int64_t rows) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blocks_.find(rows);
    if (it != blocks_.end()) return it->second;
    if (blocks_.size() >= kMaxPrimitives) {  // keep the full block, drop a tail height
      for (auto t = blocks_.begin(); t != blocks_.end(); ++t)
        if (t->first != kBlockRows) {
          blocks_.erase(t);
          break;
        }
    }
    const dnnl::memory::desc w = weights_.get_desc();
    std::shared_ptr<Block> blk = make_block(rows, &w);
    blocks_[rows] = blk;
    return blk;
  }

  void fallback(const std::vector<const Tensor*>& in, std::vector<Tensor>& out) const {
    generic_->run(in, out);
    if (relu_ && !out.empty() && out[0].type == ElemType::Float)
      for (float& v : out[0].f) v = v < 0.0f ? 0.0f : v;  // as the Relu kernel: NaN passes through
    if (relu_ && !out.empty() && out[0].type == ElemType::Double)
      for (double& v : out[0].d) v = v < 0.0 ? 0.0 : v;
  }

  std::shared_ptr<const Kernel> generic_;
  bool relu_;
  std::string where_;
  int64_t k_ = 0, n_ = 0;
  std::vector<float> bias_;
  dnnl::memory weights_;
  size_t weights_bytes_ = 0;
  mutable std::mutex mu_;
  mutable std::map<int64_t, std::shared_ptr<Block>> blocks_;
};

}  // namespace

bool dense_layer_fusable(const Attrs& attrs, const Tensor& b, const Tensor* c) {
  if (attrs.get_int("transA", 0) != 0) return false;
  if (b.type != ElemType::Float || b.shape.size() != 2) return false;
  const bool trans_b = attrs.get_int("transB", 0) != 0;
  const int64_t k = trans_b ? b.shape[1] : b.shape[0];
  const int64_t n = trans_b ? b.shape[0] : b.shape[1];
  if (k <= 0 || n < kMinOutputs || static_cast<int64_t>(b.f.size()) != k * n) return false;
  if (c) {
    if (c->type != ElemType::Float) return false;
    const int64_t nc = c->numel();
    const bool row = nc == n && (c->shape.size() == 1 || (c->shape.size() == 2 && c->shape[0] == 1));
    if (!(nc == 1 || row) || static_cast<int64_t>(c->f.size()) != nc) return false;
  }
  return sgemm_available();
}

std::unique_ptr<Kernel> make_dense_layer(const Attrs& attrs, const Tensor& b, const Tensor* c,
                                         std::shared_ptr<const Kernel> generic, bool relu) {
  try {
    return std::make_unique<DenseLayer>(attrs, b, c, std::move(generic), relu);
  } catch (const dnnl::error&) {
    return nullptr;  // oneDNN cannot build it here: the caller keeps the generic kernel
  }
}

}  // namespace flock::kernels
