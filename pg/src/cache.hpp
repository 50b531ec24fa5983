// Per-backend cache of compiled models, keyed by the model's sha256 (content address), so a model
// is parsed and compiled once per backend, not once per row or per query.
#pragma once

#include "pg.hpp"  // must come first

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flock/model.hpp"

namespace flock::pg {

// Bumped whenever flock.models changes (relcache invalidation of the catalog, in any backend).
extern uint64 catalog_generation;
// OID of flock.models once known in this backend (InvalidOid: every relcache invalidation counts).
extern Oid models_relid;

// Counters for flock.cache_stats(): how often models were compiled, found compiled, and how often
// a call site resolved its model reference through the catalog.
struct CacheStats {
  int64 compiles;
  int64 hits;
  int64 resolutions;
  int64 evictions;  // models dropped to stay within flock.model_cache_memory or _entries
  int64 specializations;   // models the optimizer specialized (optimize_call.cpp)
  int64 specialized_hits;  // specializations found in the specialized-model cache instead
};
extern CacheStats cache_stats;

// GUCs (defaults: flock::kDefaultMaxTensorElements and below).
extern int max_tensor_elements;
extern int model_cache_entries;
constexpr int kDefaultModelCacheEntries = 64;
extern int model_cache_memory_kb;  // flock.model_cache_memory: bytes of compiled models and their buffers
constexpr int kDefaultModelCacheMemoryKb = 256 * 1024;

// A sha256 as hex text: kSha256HexLen characters, kSha256HexSize bytes with the NUL.
constexpr int kSha256HexLen = 64;
constexpr int kSha256HexSize = kSha256HexLen + 1;

// sha256 of the bytes as kSha256HexLen hex characters into `out` (kSha256HexSize bytes). Plain
// PostgreSQL code.
void sha256_hex(const uint8* data, size_t len, char* out);

// The compiled model for these bytes, compiled and cached on a miss. C++: call inside flock_guard.
std::shared_ptr<const Model> cached_model(const std::string& sha256, std::span<const uint8_t> bytes);
// The compiled model if cached, else nullptr.
std::shared_ptr<const Model> find_cached_model(const std::string& sha256);

// What the optimizer (optimize_call.cpp) made of a compiled model for one set of constraints: kept
// per backend so that a prepared statement, or the same query again, does not specialize again.
struct SpecializedModel {
  std::shared_ptr<const Model> model;  // nullptr: nothing specialized, the original is used
  std::string pruned;                  // the specialization's summary, for EXPLAIN ("" when none)
  std::string not_pruned;              // why nothing was specialized, for DEBUG1 ("" when none)
  bool read_all = true;                // the inputs the model used reads (optimize::InputsRead)
  std::vector<bool> read;
  int64_t width = -1;
};
// The specialized model cached under `key` (which names the original model by its sha256 and
// everything else the result depends on), or nullptr. C++: call inside flock_guard.
std::shared_ptr<const SpecializedModel> find_specialized(const std::string& key);
// Caches it, least recently used first out, within flock.model_cache_entries and
// flock.model_cache_memory counted apart from the compiled models. C++: call inside flock_guard.
void cache_specialized(const std::string& key, std::shared_ptr<const SpecializedModel> entry);
// The key prefix of a compiled model: its sha256 and the limits it was compiled with.
std::string model_cache_key(const std::string& sha256);

// A shared_ptr kept in palloc'd memory: freed when `mcxt` is reset or deleted.
struct ModelHandle {
  std::shared_ptr<const Model> model;
};
ModelHandle* new_model_handle(MemoryContext mcxt);

}  // namespace flock::pg
