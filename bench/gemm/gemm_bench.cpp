// Dense-kernel choice (issue 15): single-precision products of the project's MLP layer shapes at
// batch 1, 64, 256 and 4096, one thread, through each library Debian offers, timed in the same run:
//   openblas  cblas_sgemm of libopenblas.so.0 (dlopen; what the core used before)
//   blis      cblas_sgemm of libblis.so.4 (dlopen)
//   dnnl      oneDNN's dnnl_sgemm (the core's sgemm, kernels/gemm.hpp)
//   dnnl-ip   oneDNN's inner-product primitive, weights packed once, bias added (kernels/dense_layer.hpp)
// Every product is checked against a double-precision reference. Prints GFLOP/s and each library's
// ratio to OpenBLAS; the OPENBLAS_CORETYPE in force (if any) is printed too, since OpenBLAS 0.3.21's
// speed on this CPU depends on it and Flock's must not. Last, the core's float32 FMA peak (register-
// only fused multiply-adds on the widest vectors it has): the ceiling any of these products, and
// any runtime's MLP, can reach on one thread.
#include <dlfcn.h>
#include <immintrin.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                            int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

CblasSgemm load(const char* lib, const char* threads_var) {
  setenv(threads_var, "1", 1);
  void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  return h ? reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm")) : nullptr;
}

template <class F>
double seconds_per_call(F&& f, double min_time) {
  for (int i = 0; i < 5; ++i) f();
  int iters = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    f();
    ++iters;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < min_time || iters < 3);
  return elapsed / iters;
}

// Twelve independent chains of fused multiply-adds, enough to keep two FMA pipes of latency 4-6
// busy: GFLOP/s of the best of 3 runs of `seconds` each. A macro, so that each instance is compiled
// for its own instruction set (target attribute) with the vectors kept in registers.
#define FLOCK_FMA_PEAK(VEC, FMA, SET, LANES)                                                          \
  double best = 0;                                                                                     \
  for (int rep = 0; rep < 3; ++rep) {                                                                  \
    VEC a0 = SET(1.0f), a1 = SET(1.1f), a2 = SET(1.2f), a3 = SET(1.3f), a4 = SET(1.4f), a5 = SET(1.5f); \
    VEC a6 = SET(1.6f), a7 = SET(1.7f), a8 = SET(1.8f), a9 = SET(1.9f), a10 = SET(2.0f);                \
    VEC a11 = SET(2.1f);                                                                               \
    const VEC m = SET(0.9999999f), c = SET(1e-7f);                                                     \
    long iters = 0;                                                                                    \
    const auto t0 = std::chrono::steady_clock::now();                                                  \
    double elapsed = 0;                                                                                \
    do {                                                                                               \
      for (int k = 0; k < 100000; ++k) {                                                               \
        a0 = FMA(a0, m, c), a1 = FMA(a1, m, c), a2 = FMA(a2, m, c), a3 = FMA(a3, m, c);                \
        a4 = FMA(a4, m, c), a5 = FMA(a5, m, c), a6 = FMA(a6, m, c), a7 = FMA(a7, m, c);                \
        a8 = FMA(a8, m, c), a9 = FMA(a9, m, c), a10 = FMA(a10, m, c), a11 = FMA(a11, m, c);            \
      }                                                                                                \
      iters += 100000;                                                                                 \
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();          \
    } while (elapsed < seconds);                                                                       \
    float out[LANES];                                                                                  \
    VEC all = FMA(FMA(FMA(a0, a1, a2), FMA(a3, a4, a5), FMA(a6, a7, a8)), a9, FMA(a10, a11, c));        \
    std::memcpy(out, &all, sizeof out);                                                                \
    peak_sink = peak_sink + out[0];                                                                    \
    best = std::max(best, static_cast<double>(iters) * 12 * (LANES) * 2 / elapsed / 1e9);              \
  }                                                                                                    \
  return best;

volatile float peak_sink;

__attribute__((target("avx512f"))) double fma_peak_avx512(double seconds) {
  FLOCK_FMA_PEAK(__m512, _mm512_fmadd_ps, _mm512_set1_ps, 16)
}
__attribute__((target("avx2,fma"))) double fma_peak_avx2(double seconds) {
  FLOCK_FMA_PEAK(__m256, _mm256_fmadd_ps, _mm256_set1_ps, 8)
}

}  // namespace

int main(int argc, char** argv) {
  double min_time = argc > 1 ? std::atof(argv[1]) : 0.3;
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) set(1);
  CblasSgemm openblas = load("libopenblas.so.0", "OPENBLAS_NUM_THREADS");
  CblasSgemm blis = load("libblis.so.4", "BLIS_NUM_THREADS");
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  std::printf("one thread; OPENBLAS_CORETYPE=%s; openblas %s, blis %s, oneDNN %d.%d.%d\n", coretype ? coretype : "(unset)",
              openblas ? "loaded" : "absent", blis ? "loaded" : "absent", dnnl_version()->major,
              dnnl_version()->minor, dnnl_version()->patch);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  std::printf("%-22s %10s %10s %10s %10s %8s %8s %8s\n", "Y[M,N] = X[M,K] W^T", "openblas", "blis", "dnnl",
              "dnnl-ip", "blis/ob", "dnnl/ob", "ip/ob");
  const int layers[][2] = {{28, 256}, {256, 256}, {256, 1}};  // (K, N) of MLP 28-256-256-1
  bool ok = true;
  for (int m : {1, 64, 256, 4096}) {
    for (const auto& kn : layers) {
      const int k = kn[0], n = kn[1];
      std::mt19937 rng(m * 7 + k + n);
      std::normal_distribution<float> dist;
      std::vector<float> x(size_t(m) * k), w(size_t(n) * k), bias(n), y(size_t(m) * n);
      for (float& v : x) v = dist(rng);
      for (float& v : w) v = dist(rng);
      for (float& v : bias) v = dist(rng);
      std::vector<double> ref(size_t(m) * n);
      for (int r = 0; r < m; ++r)
        for (int o = 0; o < n; ++o) {
          double s = bias[o];
          for (int i = 0; i < k; ++i) s += double(x[size_t(r) * k + i]) * w[size_t(o) * k + i];
          ref[size_t(r) * n + o] = s;
        }
      auto check = [&](const char* who) {
        for (size_t q = 0; q < ref.size(); ++q)
          if (std::fabs(y[q] - ref[q]) > 1e-3 * (1 + std::fabs(ref[q]))) {
            std::printf("MISMATCH %s at %zu: %g vs %g\n", who, q, y[q], ref[q]);
            ok = false;
            return;
          }
      };
      auto with_bias = [&] {
        for (int r = 0; r < m; ++r)
          for (int o = 0; o < n; ++o) y[size_t(r) * n + o] = bias[o];
      };
      const double flop = 2.0 * m * n * k;
      auto cblas = [&](CblasSgemm f, const char* who) -> double {
        if (!f) return 0;
        auto call = [&] {
          with_bias();
          f(kRowMajor, kNoTrans, kTrans, m, n, k, 1.0f, x.data(), k, w.data(), k, 1.0f, y.data(), n);
        };
        const double t = seconds_per_call(call, min_time);
        call();
        check(who);
        return flop / t / 1e9;
      };
      const double g_ob = cblas(openblas, "openblas");
      const double g_blis = cblas(blis, "blis");
      auto dnnl_call = [&] {
        with_bias();
        dnnl_sgemm('N', 'T', m, n, k, 1.0f, x.data(), k, w.data(), k, 1.0f, y.data(), n);
      };
      const double g_dnnl = flop / seconds_per_call(dnnl_call, min_time) / 1e9;
      dnnl_call();
      check("dnnl");
      using dt = dnnl::memory::data_type;
      using tag = dnnl::memory::format_tag;
      dnnl::memory::desc src({m, k}, dt::f32, tag::nc), wany({n, k}, dt::f32, tag::any), bd({n}, dt::f32, tag::x),
          dst({m, n}, dt::f32, tag::nc);
      dnnl::inner_product_forward::primitive_desc pd({dnnl::prop_kind::forward_inference, src, wany, bd, dst}, eng);
      dnnl::memory wplain({{n, k}, dt::f32, tag::oi}, eng, w.data()), wpacked(pd.weights_desc(), eng);
      dnnl::reorder(wplain, wpacked).execute(stream, wplain, wpacked);
      dnnl::memory sm(src, eng, x.data()), bm(bd, eng, bias.data()), dm(dst, eng, y.data());
      dnnl::inner_product_forward ip(pd);
      auto ip_call = [&] {
        ip.execute(stream, {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, wpacked}, {DNNL_ARG_BIAS, bm}, {DNNL_ARG_DST, dm}});
        stream.wait();
      };
      const double g_ip = flop / seconds_per_call(ip_call, min_time) / 1e9;
      ip_call();
      check("dnnl-ip");
      char shape[64];
      std::snprintf(shape, sizeof shape, "M %4d K %3d N %3d", m, k, n);
      auto ratio = [&](double g) { return g_ob > 0 ? g / g_ob : 0.0; };
      std::printf("%-22s %10.1f %10.1f %10.1f %10.1f %8.2f %8.2f %8.2f\n", shape, g_ob, g_blis, g_dnnl, g_ip,
                  ratio(g_blis), ratio(g_dnnl), ratio(g_ip));
    }
  }
  std::printf("GFLOP/s, higher is better; ratios to OpenBLAS measured in the same run. %s\n",
              ok ? "Every product matched the double-precision reference." : "MISMATCHES above.");
  if (__builtin_cpu_supports("avx512f"))
    std::printf("float32 FMA peak of this core (AVX-512, registers only): %.1f GFLOP/s\n", fma_peak_avx512(min_time));
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    std::printf("float32 FMA peak of this core (AVX2, registers only): %.1f GFLOP/s\n", fma_peak_avx2(min_time));
  return ok ? 0 : 1;
}
