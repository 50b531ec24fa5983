#include "cache.hpp"

#include "guard.hpp"

#include <fmt/format.h>

#include <list>
#include <unordered_map>

extern "C" {
PG_FUNCTION_INFO_V1(flock_cache_stats);
}

namespace flock::pg {

uint64 catalog_generation = 1;
CacheStats cache_stats = {0, 0, 0, 0, 0, 0};
int max_tensor_elements = kDefaultMaxTensorElements;
int model_cache_entries = kDefaultModelCacheEntries;
int model_cache_memory_kb = kDefaultModelCacheMemoryKb;

void sha256_hex(const uint8* data, size_t len, char* out) {
  uint8 digest[PG_SHA256_DIGEST_LENGTH];
  pg_cryptohash_ctx* ctx = pg_cryptohash_create(PG_SHA256);
  if (pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, data, len) < 0 ||
      pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0) {
    pg_cryptohash_free(ctx);
    elog(ERROR, "could not compute sha256 of a model");
  }
  pg_cryptohash_free(ctx);
  static const char hex[] = "0123456789abcdef";
  for (int k = 0; k < PG_SHA256_DIGEST_LENGTH; ++k) {
    out[2 * k] = hex[digest[k] >> 4];
    out[2 * k + 1] = hex[digest[k] & 15];
  }
  out[2 * PG_SHA256_DIGEST_LENGTH] = '\0';
}

namespace {

struct Entry {
  std::string key;
  std::shared_ptr<const Model> model;
};

// LRU: most recently used at the front. Keyed by sha256 and the tensor limit compiled in.
struct Cache {
  std::list<Entry> order;
  std::unordered_map<std::string, std::list<Entry>::iterator> index;
};

Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

std::string key_for(const std::string& sha256) { return fmt::format("{}/{}", sha256, max_tensor_elements); }

struct SpecializedEntry {
  std::string key;
  std::shared_ptr<const SpecializedModel> value;
};

// The specialized models, most recently used at the front.
struct SpecializedCache {
  std::list<SpecializedEntry> order;
  std::unordered_map<std::string, std::list<SpecializedEntry>::iterator> index;
};

SpecializedCache& specialized_cache() {
  static SpecializedCache* c = new SpecializedCache();
  return *c;
}

size_t specialized_bytes(const SpecializedEntry& e) {
  return sizeof(SpecializedModel) + e.key.size() + e.value->read.size() / 8 +
         (e.value->model ? e.value->model->memory_bytes() : 0);
}

size_t budget_bytes() { return static_cast<size_t>(std::max(model_cache_memory_kb, 1)) * 1024; }

// Bytes the cached models hold now (their run buffers change with every run, so it is re-summed).
size_t cached_bytes() {
  size_t total = 0;
  for (const Entry& e : cache().order) total += e.model->memory_bytes();
  return total;
}

void evict(std::list<Entry>::iterator it) {
  Cache& c = cache();
  c.index.erase(it->key);
  c.order.erase(it);  // queries holding the model keep it alive through their ModelHandle
  cache_stats.evictions++;
}

// Drops models past flock.model_cache_entries and flock.model_cache_memory: first any model larger
// than the whole budget by itself, then the least recently used. Never the most recent one (the
// caller is about to use it), nor one a running query holds (dropping it would free nothing now).
void enforce_limits() {
  Cache& c = cache();
  if (c.order.size() < 2) return;
  const size_t budget = budget_bytes();
  size_t total = cached_bytes();
  auto evictable = [&](std::list<Entry>::iterator it) { return it != c.order.begin() && it->model.use_count() == 1; };
  auto over = [&] { return total > budget || static_cast<int>(c.order.size()) > std::max(model_cache_entries, 1); };
  for (auto it = c.order.begin(); it != c.order.end() && over();) {
    auto next = std::next(it);
    const size_t bytes = it->model->memory_bytes();
    if (bytes > budget && evictable(it)) {
      total -= std::min(total, bytes);
      evict(it);
    }
    it = next;
  }
  for (auto it = c.order.end(); it != c.order.begin() && over();) {
    auto prev = std::prev(it);
    if (evictable(prev)) {
      total -= std::min(total, prev->model->memory_bytes());
      evict(prev);
    }
    it = prev;
  }
}

}  // namespace

std::string model_cache_key(const std::string& sha256) { return key_for(sha256); }

std::shared_ptr<const SpecializedModel> find_specialized(const std::string& key) {
  SpecializedCache& c = specialized_cache();
  auto it = c.index.find(key);
  if (it == c.index.end()) return nullptr;
  cache_stats.specialized_hits++;
  c.order.splice(c.order.begin(), c.order, it->second);
  return it->second->value;
}

void cache_specialized(const std::string& key, std::shared_ptr<const SpecializedModel> entry) {
  SpecializedCache& c = specialized_cache();
  if (auto it = c.index.find(key); it != c.index.end()) {
    c.order.erase(it->second);
    c.index.erase(it);
  }
  c.order.push_front({key, std::move(entry)});
  c.index[c.order.front().key] = c.order.begin();
  // Least recently used out past the limits, never the newest (its query is about to use it). A
  // query using an evicted model keeps it alive through its ModelHandle.
  const size_t budget = budget_bytes();
  size_t total = 0;
  for (const SpecializedEntry& e : c.order) total += specialized_bytes(e);
  while (c.order.size() > 1 &&
         (total > budget || static_cast<int>(c.order.size()) > std::max(model_cache_entries, 1))) {
    auto last = std::prev(c.order.end());
    total -= std::min(total, specialized_bytes(*last));
    c.index.erase(last->key);
    c.order.erase(last);
    cache_stats.evictions++;
  }
}

std::shared_ptr<const Model> find_cached_model(const std::string& sha256) {
  Cache& c = cache();
  auto it = c.index.find(key_for(sha256));
  if (it == c.index.end()) return nullptr;
  cache_stats.hits++;
  c.order.splice(c.order.begin(), c.order, it->second);
  std::shared_ptr<const Model> model = it->second->model;
  enforce_limits();  // the others' run buffers may have grown since the last check
  return model;
}

std::shared_ptr<const Model> cached_model(const std::string& sha256, std::span<const uint8_t> bytes) {
  if (auto hit = find_cached_model(sha256)) return hit;
  Limits limits;
  limits.max_tensor_elements = max_tensor_elements;
  std::shared_ptr<const Model> model = Model::load(bytes, ModelFormat::Auto, limits);
  cache_stats.compiles++;
  Cache& c = cache();
  c.order.push_front({key_for(sha256), model});
  c.index[c.order.front().key] = c.order.begin();
  enforce_limits();
  return model;
}

namespace {
void destroy_handle(void* arg) { static_cast<ModelHandle*>(arg)->~ModelHandle(); }
}  // namespace

ModelHandle* new_model_handle(MemoryContext mcxt) {
  void* mem = MemoryContextAllocZero(mcxt, sizeof(ModelHandle));
  auto* handle = new (mem) ModelHandle();
  auto* cb = static_cast<MemoryContextCallback*>(MemoryContextAllocZero(mcxt, sizeof(MemoryContextCallback)));
  cb->func = destroy_handle;
  cb->arg = handle;
  MemoryContextRegisterResetCallback(mcxt, cb);
  return handle;
}

}  // namespace flock::pg

// flock.cache_stats(): this backend's model cache, as jsonb.
Datum flock_cache_stats(PG_FUNCTION_ARGS) {
  using namespace flock::pg;
  size_t entries = 0, bytes = 0, specialized_entries = 0;
  flock_guard([&] {
    entries = cache().order.size();
    bytes = cached_bytes();
    specialized_entries = specialized_cache().order.size();
  });
  char* json = psprintf(
      "{\"entries\": %zu, \"compiles\": " INT64_FORMAT ", \"hits\": " INT64_FORMAT ", \"resolutions\": " INT64_FORMAT
      ", \"bytes\": %zu, \"budget_bytes\": %zu, \"evictions\": " INT64_FORMAT
      ", \"specializations\": " INT64_FORMAT ", \"specialized_hits\": " INT64_FORMAT
      ", \"specialized_entries\": %zu}",
      entries, cache_stats.compiles, cache_stats.hits, cache_stats.resolutions, bytes, budget_bytes(),
      cache_stats.evictions, cache_stats.specializations, cache_stats.specialized_hits, specialized_entries);
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
