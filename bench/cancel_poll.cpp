// flock_bench_cancel_poll: what polling for interrupts costs a model run (see flock/interrupt.hpp).
//
//   flock_bench_cancel_poll MODEL --batch N [--rounds R] [--min-time SECONDS]
//
// Times Model::run on one random batch of N rows, alternating R rounds without an interrupt
// callback and with one that reads a volatile flag and never fires (as PostgreSQL's reads
// InterruptPending), each round at least --min-time seconds. Prints one JSON object: the median
// nanoseconds per batch of each, their ratio, and how many polls one run makes.
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "flock/interrupt.hpp"
#include "flock/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t pending = 0;
long polls = 0;
bool never_fires() { return pending != 0; }
bool counting() {
  ++polls;
  return false;
}

double ns_per_run(const flock::Model& model, const flock::FeatureBatch& batch, double min_time) {
  long iterations = 0;
  const auto start = Clock::now();
  double elapsed = 0;
  do {
    model.run(batch);
    ++iterations;
    elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  } while (elapsed < min_time || iterations < 2);
  return elapsed * 1e9 / static_cast<double>(iterations);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: flock_bench_cancel_poll MODEL --batch N [--rounds R] [--min-time SECONDS]\n");
    return 2;
  }
  const std::string path = argv[1];
  int64_t rows = 1024;
  int rounds = 5;
  double min_time = 0.5;
  for (int k = 2; k + 1 < argc; k += 2) {
    if (!std::strcmp(argv[k], "--batch")) rows = std::atoll(argv[k + 1]);
    else if (!std::strcmp(argv[k], "--rounds")) rounds = std::atoi(argv[k + 1]);
    else if (!std::strcmp(argv[k], "--min-time")) min_time = std::atof(argv[k + 1]);
  }
  std::ifstream in(path, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    auto model = flock::Model::load(bytes);
    const auto& spec = model->signature().inputs.at(0);
    flock::FeatureBatch batch;
    batch.rows = rows;
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(rows * spec.width));
    for (float& v : x) v = dist(rng);
    batch.inputs.push_back(flock::Tensor::floats({rows, spec.width}, std::move(x)));
    flock::set_interrupt_check(counting);
    model->run(batch);  // warm-up, and the number of polls of one run
    const long polls_per_run = polls;
    std::vector<double> off, on;
    for (int r = 0; r < rounds; ++r) {
      flock::set_interrupt_check(nullptr);
      off.push_back(ns_per_run(*model, batch, min_time));
      flock::set_interrupt_check(never_fires);
      on.push_back(ns_per_run(*model, batch, min_time));
    }
    const double a = median(off), b = median(on);
    std::printf("{\"model\": \"%s\", \"batch\": %lld, \"polls_per_run\": %ld, \"ns_per_batch_no_callback\": %.0f, "
                "\"ns_per_batch_polling\": %.0f, \"ratio\": %.4f}\n",
                path.c_str(), static_cast<long long>(rows), polls_per_run, a, b, b / a);
  } catch (const flock::Error& e) {
    std::fprintf(stderr, "flock_bench_cancel_poll: %s\n", e.what());
    return 1;
  }
  return 0;
}
