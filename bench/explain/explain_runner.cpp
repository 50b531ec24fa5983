// Times flock::explain::explain (TreeSHAP contributions) on a batch, for bench/explain/shap_vs_xgboost.py.
//
//   flock_bench_explain MODEL.json DATA.f32 ROWS COLS OUT.f64
//
// DATA.f32: ROWS x COLS float32, row-major (NaN = missing). Writes the contributions
// (ROWS x (COLS + 1) doubles) to OUT.f64 and prints {"seconds": ...} (the explain call only, one thread).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include "flock/explain.hpp"
#include "flock/model.hpp"

int main(int argc, char** argv) {
  if (argc != 6 && argc != 8) {
    std::fprintf(stderr, "usage: %s MODEL DATA.f32 ROWS COLS OUT.f64 [BACKGROUND.f32 BACKGROUND_ROWS]\n",
                 argv[0]);
    return 2;
  }
  try {
    std::ifstream mf(argv[1], std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(mf)), std::istreambuf_iterator<char>());
    const auto model = flock::Model::load(std::span<const uint8_t>(bytes));
    const int64_t rows = std::atoll(argv[3]), cols = std::atoll(argv[4]);
    std::vector<float> x(static_cast<size_t>(rows * cols));
    std::ifstream df(argv[2], std::ios::binary);
    df.read(reinterpret_cast<char*>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float)));
    if (!df) throw std::runtime_error("short data file");
    flock::FeatureBatch batch;
    batch.rows = rows;
    batch.inputs.push_back(flock::Tensor::floats({rows, cols}, std::move(x)));
    flock::explain::Options options;
    flock::FeatureBatch background;
    if (argc == 8) {  // a background for models without node covers
      const int64_t brows = std::atoll(argv[7]);
      std::vector<float> b(static_cast<size_t>(brows * cols));
      std::ifstream bf(argv[6], std::ios::binary);
      bf.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(b.size() * sizeof(float)));
      if (!bf) throw std::runtime_error("short background file");
      background.rows = brows;
      background.inputs.push_back(flock::Tensor::floats({brows, cols}, std::move(b)));
      options.background = &background;
    }
    if (const char* form = std::getenv("FLOCK_TREE_SHAP_FORM"))
      options.tree_shap_form = std::string(form) == "recursive" ? flock::explain::TreeShapForm::Recursive
                                                                : flock::explain::TreeShapForm::LeafTables;
    const auto start = std::chrono::steady_clock::now();
    const flock::explain::Explanation e = flock::explain::explain(*model, batch, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::ofstream out(argv[5], std::ios::binary);
    out.write(reinterpret_cast<const char*>(e.contributions.data()),
              static_cast<std::streamsize>(e.contributions.size() * sizeof(double)));
    std::printf("{\"seconds\": %.6f}\n", seconds);
    return 0;
  } catch (const std::exception& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 1;
  }
}
