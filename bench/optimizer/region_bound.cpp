// flock_bench_region: what the prediction region (flock/optimize.hpp) derives for a model and a
// threshold, and what deriving it costs, with the per-tree bound only and with the group bound.
//
//   flock_bench_region MODEL OP C [BUDGET...]      OP: gt ge lt le
//   flock_bench_region MODEL bound LO HI [BUDGET...]
//
// `bound`: per budget, the smallest c in [LO, HI] (bisection, 1e-4) for which `prediction > c` has
// an empty region: the bound's value for the model's largest prediction.
// Prints one JSON object per budget (0: the per-tree bound only): milliseconds (median of 3), the
// columns narrowed and, per narrowed column, its region's intervals.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "flock/model.hpp"
#include "flock/optimize.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace opt = flock::optimize;

std::string number(double v) {
  if (v == std::numeric_limits<double>::infinity()) return "\"inf\"";
  if (v == -std::numeric_limits<double>::infinity()) return "\"-inf\"";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s MODEL gt|ge|lt|le C [BUDGET...]\n", argv[0]);
    return 2;
  }
  std::ifstream f(argv[1], std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto model = flock::Model::load(bytes);
  const std::string op_name = argv[2];
  if (op_name == "bound") {
    std::vector<int64_t> budgets;
    for (int i = 5; i < argc; ++i) budgets.push_back(std::strtoll(argv[i], nullptr, 10));
    if (budgets.empty()) budgets = {0, opt::RegionBudget{}.tight_work};
    for (const int64_t budget : budgets) {
      double lo = std::strtod(argv[3], nullptr), hi = std::strtod(argv[4], nullptr);
      while (hi - lo > 1e-4) {
        const double mid = (lo + hi) / 2;
        const auto region = opt::prediction_region(*model, opt::Comparison::Greater, mid, {}, opt::RegionBudget{budget});
        if (region && region->none) hi = mid;
        else lo = mid;
      }
      std::printf("{\"budget\": %lld, \"largest prediction at most\": %.5f}\n", static_cast<long long>(budget), hi);
    }
    return 0;
  }
  const opt::Comparison op = op_name == "gt"   ? opt::Comparison::Greater
                             : op_name == "ge" ? opt::Comparison::GreaterOrEqual
                             : op_name == "lt" ? opt::Comparison::Less
                                               : opt::Comparison::LessOrEqual;
  const double c = std::strtod(argv[3], nullptr);
  std::vector<int64_t> budgets;
  for (int i = 4; i < argc; ++i) budgets.push_back(std::strtoll(argv[i], nullptr, 10));
  if (budgets.empty()) budgets = {0, opt::RegionBudget{}.tight_work};
  for (const int64_t budget : budgets) {
    std::vector<double> ms;
    std::optional<opt::PredictionRegion> region;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = Clock::now();
      region = opt::prediction_region(*model, op, c, {}, opt::RegionBudget{budget});
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("{\"budget\": %lld, \"ms\": %.1f, \"found\": %s", static_cast<long long>(budget), ms[1],
                region ? "true" : "false");
    if (region) {
      std::printf(", \"none\": %s, \"narrowed\": %lld, \"columns\": {", region->none ? "true" : "false",
                  static_cast<long long>(region->columns_narrowed()));
      bool first = true;
      for (size_t k = 0; k < region->columns.size(); ++k) {
        const auto& col = region->columns[k];
        if (col.all) continue;
        std::printf("%s\"%zu\": {\"missing\": %s, \"intervals\": [", first ? "" : ", ", k,
                    col.missing_allowed ? "true" : "false");
        first = false;
        for (size_t i = 0; i < col.intervals.size(); ++i) {
          const auto& iv = col.intervals[i];
          const double lo = iv.lower() ? iv.lower()->value : -std::numeric_limits<double>::infinity();
          const double hi = iv.upper() ? iv.upper()->value : std::numeric_limits<double>::infinity();
          std::printf("%s[%s, %s]", i ? ", " : "", number(lo).c_str(), number(hi).c_str());
        }
        std::printf("]}");
      }
      std::printf("}");
    }
    std::printf("}\n");
  }
  return 0;
}
