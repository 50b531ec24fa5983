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
CacheStats cache_stats = {0, 0, 0};
int max_tensor_elements = 1 << 28;
int model_cache_entries = 64;

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

// LRU: most recently used at the front. Keyed by sha256 and the tensor limit compiled in.
struct Cache {
  std::list<std::pair<std::string, std::shared_ptr<const Model>>> order;
  std::unordered_map<std::string, decltype(order)::iterator> index;
};

Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

std::string key_for(const std::string& sha256) { return fmt::format("{}/{}", sha256, max_tensor_elements); }

}  // namespace

std::shared_ptr<const Model> find_cached_model(const std::string& sha256) {
  Cache& c = cache();
  auto it = c.index.find(key_for(sha256));
  if (it == c.index.end()) return nullptr;
  cache_stats.hits++;
  c.order.splice(c.order.begin(), c.order, it->second);
  return it->second->second;
}

std::shared_ptr<const Model> cached_model(const std::string& sha256, std::span<const uint8_t> bytes) {
  if (auto hit = find_cached_model(sha256)) return hit;
  Limits limits;
  limits.max_tensor_elements = max_tensor_elements;
  std::shared_ptr<const Model> model = Model::load(bytes, ModelFormat::Auto, limits);
  cache_stats.compiles++;
  Cache& c = cache();
  c.order.emplace_front(key_for(sha256), model);
  c.index[c.order.front().first] = c.order.begin();
  while (static_cast<int>(c.order.size()) > std::max(model_cache_entries, 1)) {
    c.index.erase(c.order.back().first);
    c.order.pop_back();  // queries holding it keep it alive through their ModelHandle
  }
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
  size_t entries = 0;
  flock_guard([&] { entries = cache().order.size(); });
  char* json = psprintf(
      "{\"entries\": %zu, \"compiles\": " INT64_FORMAT ", \"hits\": " INT64_FORMAT ", \"resolutions\": " INT64_FORMAT "}",
      entries, cache_stats.compiles, cache_stats.hits, cache_stats.resolutions);
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}
