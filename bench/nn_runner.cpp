// flock_bench_nn: times one ONNX model on the core runtime (flock::Model::run_tensors), single thread.
//
//   flock_bench_nn MODEL.onnx --batch N [--min-time SECONDS] [--warmup SECONDS] [--min-iters K]
//                  [--input FILE] [--seed S] [--dump-output FILE]
//
// The model must have one float input whose first dimension is the (dynamic) batch and whose other
// dimensions are fixed. The input tensor is [N, ...]: read from FILE (raw little-endian float32,
// exactly N * width values) or drawn from a normal distribution with a fixed seed.
//
// Each timed iteration is one Model::run_tensors call on the whole batch, including the release of
// its outputs; the copy of the input tensor the call consumes is made before the clock starts (the
// same input, so every iteration does the same work). Iterations repeat until --min-time seconds
// of timed work and at least --min-iters iterations. --dump-output writes the first graph output of
// one run (raw float32) so a caller can compare it with another runtime.
//
// Prints one JSON object on stdout:
//   {"model":..., "batch":N, "iterations":K, "ns_per_batch":..., "rows_per_second":..., ...}
// Exit status: 0 on success, 1 on a flock::Error (message on stderr; e.g. an unsupported operator),
// 2 on bad arguments or I/O errors.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "flock/model.hpp"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "flock_bench_nn: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: flock_bench_nn MODEL.onnx --batch N [--min-time S] [--warmup S] [--min-iters K]\n"
               "                      [--input FILE] [--seed S] [--dump-output FILE]\n");
  std::exit(2);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) usage_error("cannot open " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

struct Options {
  std::string model;
  int64_t batch = 1;
  double min_time = 0.5;
  double warmup = 0.1;
  int64_t min_iters = 3;
  std::string input;
  uint64_t seed = 42;
  std::string dump_output;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int k = 1; k < argc; ++k) {
    std::string a = argv[k];
    auto value = [&]() -> std::string {
      if (k + 1 >= argc) usage_error(a + " needs a value");
      return argv[++k];
    };
    try {
      if (a == "--batch") o.batch = std::stoll(value());
      else if (a == "--min-time") o.min_time = std::stod(value());
      else if (a == "--warmup") o.warmup = std::stod(value());
      else if (a == "--min-iters") o.min_iters = std::stoll(value());
      else if (a == "--input") o.input = value();
      else if (a == "--seed") o.seed = std::stoull(value());
      else if (a == "--dump-output") o.dump_output = value();
      else if (a == "-h" || a == "--help") usage_error("help");
      else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
      else if (o.model.empty()) o.model = a;
      else usage_error("more than one model given");
    } catch (const std::logic_error&) {
      usage_error("bad value for " + a);
    }
  }
  if (o.model.empty()) usage_error("no model given");
  if (o.batch < 1) usage_error("--batch must be at least 1");
  if (o.min_iters < 1) o.min_iters = 1;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  try {
    const std::vector<uint8_t> bytes = read_bytes(opt.model);
    const auto t_load = Clock::now();
    auto model = flock::Model::load(bytes);
    const double load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_load).count();

    const auto& inputs = model->signature().inputs;
    if (inputs.size() != 1) usage_error("the model must have exactly one input");
    const flock::InputSpec& spec = inputs[0];
    if (spec.type != flock::ElemType::Float) usage_error("the model input must be float");
    std::vector<int64_t> shape = spec.shape;
    for (size_t d = 1; d < shape.size(); ++d)
      if (shape[d] < 0) usage_error("the model input has a dynamic dimension past the batch");
    shape[0] = opt.batch;
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;

    flock::Tensor x(flock::ElemType::Float, shape);
    if (!opt.input.empty()) {
      const std::vector<uint8_t> raw = read_bytes(opt.input);
      if (raw.size() != static_cast<size_t>(numel) * sizeof(float))
        usage_error("input file " + opt.input + " has " + std::to_string(raw.size()) + " bytes, expected " +
                    std::to_string(numel * sizeof(float)));
      std::memcpy(x.f.data(), raw.data(), raw.size());
    } else {
      std::mt19937_64 rng(opt.seed);
      std::normal_distribution<float> dist(0.0f, 1.0f);
      for (float& v : x.f) v = dist(rng);
    }

    auto run_once = [&]() {
      std::vector<flock::Tensor> feed;
      feed.push_back(x);  // the call consumes its inputs: copy outside the timed region
      const auto t0 = Clock::now();
      {
        std::vector<flock::Tensor> out = model->run_tensors(std::move(feed));
        (void)out;
      }
      return std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    };

    if (!opt.dump_output.empty()) {
      std::vector<flock::Tensor> out = model->run_tensors({x});
      if (out.empty() || out[0].type != flock::ElemType::Float)
        usage_error("the first model output is not a float tensor");
      std::ofstream f(opt.dump_output, std::ios::binary);
      if (!f) usage_error("cannot write " + opt.dump_output);
      f.write(reinterpret_cast<const char*>(out[0].f.data()),
              static_cast<std::streamsize>(out[0].f.size() * sizeof(float)));
    }

    // Warm-up: at least one run and `warmup` seconds.
    {
      const auto end = Clock::now() + std::chrono::duration<double>(opt.warmup);
      do run_once();
      while (Clock::now() < end);
    }

    double total_ns = 0;
    int64_t iters = 0;
    const double min_ns = opt.min_time * 1e9;
    while (total_ns < min_ns || iters < opt.min_iters) {
      total_ns += run_once();
      ++iters;
    }
    const double ns_per_batch = total_ns / static_cast<double>(iters);
    const double rows_per_second = static_cast<double>(opt.batch) * 1e9 / ns_per_batch;

    std::string shape_text;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (d) shape_text += ',';
      shape_text += std::to_string(shape[d]);
    }
    std::printf(
        "{\"model\": \"%s\", \"batch\": %lld, \"input_shape\": [%s], \"threads\": 1, \"iterations\": %lld, "
        "\"ns_per_batch\": %.1f, \"rows_per_second\": %.1f, \"load_ms\": %.3f}\n",
        json_escape(opt.model).c_str(), static_cast<long long>(opt.batch), shape_text.c_str(),
        static_cast<long long>(iters), ns_per_batch, rows_per_second, load_ms);
    return 0;
  } catch (const flock::Error& e) {
    std::fprintf(stderr, "flock_bench_nn: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 1;
  }
}
