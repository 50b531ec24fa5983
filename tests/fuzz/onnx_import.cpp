// libFuzzer target: ONNX protobuf bytes through flock::Model::load (import, libonnx's checker and
// shape inference, compile, trial run), then a scoring of a few rows.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flock::fuzz::load_and_score({data, size}, flock::ModelFormat::Onnx);
  return 0;
}
