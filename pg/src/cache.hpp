// Per-backend cache of compiled models, keyed by the model's sha256 (content address), so a model
// is parsed and compiled once per backend, not once per row or per query.
#pragma once

#include "pg.hpp"  // must come first

#include <cstdint>
#include <memory>
#include <span>
#include <string>

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

// A shared_ptr kept in palloc'd memory: freed when `mcxt` is reset or deleted.
struct ModelHandle {
  std::shared_ptr<const Model> model;
};
ModelHandle* new_model_handle(MemoryContext mcxt);

}  // namespace flock::pg
