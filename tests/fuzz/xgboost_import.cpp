// libFuzzer target: XGBoost JSON bytes through flock::Model::load (Flock's own JSON reader, the
// conversion to a tree-ensemble kernel, compile, trial run), then a scoring of a few rows.
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  flock::fuzz::load_and_score({data, size}, flock::ModelFormat::XGBoostJson);
  return 0;
}
