#include "shared_model.hpp"

#include <cstring>
#include <list>
#include <span>
#include <string>
#include <vector>

#include "call_state.hpp"
#include "guard.hpp"

namespace flock::pg {

namespace {

constexpr uint32 kSharedMagic = 0x464c4b31;  // "FLK1"
constexpr int kTextSize = NAMEDATALEN + 16;  // "name@version", or a name reference
constexpr size_t kKeptModels = 8;

// What the leader made of one call, for a worker. offset 0: not shared.
struct SharedCall {
  uint64 offset;  // of the model's bytes from the chunk's start
  uint64 length;
  bool by_name;   // resolved through the catalog (else a flock.model value)
  char sha[kSha256HexSize];
  char label[kTextSize];
  char ref[kTextSize];
  char audit_model[NAMEDATALEN];
  int32 audit_mode;
  double audit_rate;
  bool audit_sync;
  int32 audit_version;
};

struct SharedHeader {
  uint32 magic;
  int32 ncalls;
  uint64 size;  // bytes of the whole chunk
  SharedCall calls[FLEXIBLE_ARRAY_MEMBER];
};

Size header_size(int ncalls) {
  return MAXALIGN(add_size(offsetof(SharedHeader, calls), mul_size(sizeof(SharedCall), ncalls)));
}

// The bytes of the models this backend shared, most recently used first: a session running
// parallel queries reads a model's bytes out of TOAST once, not per query.
struct KeptBytes {
  std::string sha;
  std::vector<uint8_t> bytes;
};

std::list<KeptBytes>& kept() {
  static auto* k = new std::list<KeptBytes>();
  return *k;
}

size_t kept_budget() { return static_cast<size_t>(std::max(model_cache_memory_kb, 1)) * 1024; }

// The kept bytes of `sha`, or nullptr. C++: call inside flock_guard.
const std::vector<uint8_t>* find_kept(const char* sha) {
  auto& k = kept();
  for (auto it = k.begin(); it != k.end(); ++it) {
    if (it->sha != sha) continue;
    k.splice(k.begin(), k, it);
    return &k.front().bytes;
  }
  return nullptr;
}

// Keeps a copy, least recently used out past kKeptModels or the budget. False when the bytes alone
// are past the budget. C++: call inside flock_guard.
bool keep(const char* sha, const uint8_t* data, size_t len) {
  const size_t budget = kept_budget();
  if (len > budget) return false;
  auto& k = kept();
  k.push_front({sha, std::vector<uint8_t>(data, data + len)});
  size_t total = 0;
  for (const KeptBytes& e : k) total += e.bytes.size();
  while (k.size() > 1 && (total > budget || k.size() > kKeptModels)) {
    total -= k.back().bytes.size();
    k.pop_back();
  }
  return true;
}

// Keeps the bytes if they are the resolved model's (same sha256). Plain PostgreSQL code.
void keep_if_resolved(const CallState* st, bytea* bytes) {
  const auto* data = reinterpret_cast<const uint8*>(VARDATA_ANY(bytes));
  const size_t len = VARSIZE_ANY_EXHDR(bytes);
  char sha[kSha256HexSize];
  sha256_hex(data, len, sha);
  if (strcmp(sha, st->model_sha) != 0) return;
  flock_guard([&] { keep(sha, data, len); });
}

// Reads the bytes of a model resolved by name (its name and version are the audit policy's).
void keep_catalog_bytes(const CallState* st) {
  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid types[2] = {TEXTOID, INT4OID};
  Datum key[2] = {CStringGetTextDatum(st->audit_model), Int32GetDatum(st->audit_version)};
  if (SPI_execute_with_args("SELECT model FROM flock.models WHERE name = $1 AND version = $2", 2, types, key,
                            nullptr, true, 1) == SPI_OK_SELECT &&
      SPI_processed == 1) {
    bool isnull;
    Datum d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
    if (!isnull) keep_if_resolved(st, DatumGetByteaPP(d));  // detoasts
  }
  SPI_finish();
}

bool text_fits(const char* s) { return strlen(s) < static_cast<size_t>(kTextSize); }

bool shareable(const SharedCalls& sc, int k) {
  const CallState* st = sc.calls[k];
  if (!sc.share[k] || !st->model) return false;
  return text_fits(st->label) && (!st->ref || text_fits(st->ref));
}

// The kept bytes of call k, reading them first when not kept. Plain PostgreSQL code.
const std::vector<uint8_t>* bytes_for(const SharedCalls& sc, int k, bool read) {
  const CallState* st = sc.calls[k];
  const std::vector<uint8_t>* bytes = nullptr;
  flock_guard([&] { bytes = find_kept(st->model_sha); });
  if (bytes || !read) return bytes;
  if (st->model_is_value) keep_if_resolved(st, DatumGetByteaPP(sc.model_values[k]));
  else keep_catalog_bytes(st);
  flock_guard([&] { bytes = find_kept(st->model_sha); });
  return bytes;
}

bool terminated(const char* s, size_t size) { return memchr(s, '\0', size) != nullptr; }

bool is_sha256_hex(const char* s) {
  for (int i = 0; i < kSha256HexLen; ++i)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return s[kSha256HexLen] == '\0';
}

}  // namespace

Size shared_models_size(const SharedCalls& sc, Size segment) {
  Size size = header_size(sc.ncalls);
  for (int k = 0; k < sc.ncalls; ++k) {
    if (!shareable(sc, k)) {
      sc.share[k] = false;
      continue;
    }
    const std::vector<uint8_t>* bytes = bytes_for(sc, k, true);
    const Size more = bytes ? MAXALIGN(bytes->size()) : 0;
    sc.share[k] = bytes && add_size(add_size(segment, size), more) <= kept_budget();
    if (sc.share[k]) size += more;
  }
  return size;
}

void shared_models_write(const SharedCalls& sc, void* chunk, Size size) {
  auto* h = static_cast<SharedHeader*>(chunk);
  const Size head = header_size(sc.ncalls);
  memset(h, 0, head);
  h->magic = kSharedMagic;
  h->ncalls = sc.ncalls;
  h->size = size;
  Size pos = head;
  for (int k = 0; k < sc.ncalls; ++k) {
    if (!shareable(sc, k)) continue;
    // Kept since shared_models_size, unless another call of the node pushed them out.
    const std::vector<uint8_t>* bytes = bytes_for(sc, k, false);
    if (!bytes || bytes->empty() || MAXALIGN(bytes->size()) > size - pos) continue;
    const CallState* st = sc.calls[k];
    SharedCall& c = h->calls[k];
    memcpy(static_cast<char*>(chunk) + pos, bytes->data(), bytes->size());
    c.offset = pos;
    c.length = bytes->size();
    pos += MAXALIGN(bytes->size());
    c.by_name = !st->model_is_value;
    strlcpy(c.sha, st->model_sha, sizeof(c.sha));
    strlcpy(c.label, st->label, sizeof(c.label));
    strlcpy(c.ref, st->ref ? st->ref : "", sizeof(c.ref));
    strlcpy(c.audit_model, st->audit_model, sizeof(c.audit_model));
    c.audit_mode = static_cast<int32>(st->audit_mode);
    c.audit_rate = st->audit_rate;
    c.audit_sync = st->audit_sync;
    c.audit_version = st->audit_version;
  }
}

bool resolve_shared_model(CallState* st, const void* chunk, int k) {
  const auto* h = static_cast<const SharedHeader*>(chunk);
  if (!h || h->magic != kSharedMagic || k < 0 || k >= h->ncalls || h->size < header_size(h->ncalls)) return false;
  const SharedCall& c = h->calls[k];
  if (c.offset == 0) return false;
  // The leader wrote it, but nothing is read past the chunk nor past a field.
  if (c.offset < header_size(h->ncalls) || c.offset > h->size || c.length == 0 || c.length > h->size - c.offset ||
      !is_sha256_hex(c.sha) || !terminated(c.label, sizeof(c.label)) || !terminated(c.ref, sizeof(c.ref)) ||
      !terminated(c.audit_model, sizeof(c.audit_model)) || c.by_name == st->model_is_value ||
      c.audit_mode < static_cast<int32>(AuditMode::Off) || c.audit_mode > static_cast<int32>(AuditMode::All))
    elog(ERROR, "flock: a parallel worker received a malformed model from its leader");
  // Compiled from a private copy, as bytes read from the catalog are: nothing can change them
  // under the compiler (the segment is writable by the leader and the other workers).
  auto* bytes = static_cast<uint8_t*>(MemoryContextAllocHuge(CurrentMemoryContext, c.length));
  memcpy(bytes, static_cast<const char*>(chunk) + c.offset, c.length);
  ModelHandle* handle = new_model_handle(CurrentMemoryContext);
  // Compiled (or found compiled) like bytes read from the catalog: the same checks and limits.
  flock_guard([&] { handle->model = cached_model(c.sha, {bytes, static_cast<size_t>(c.length)}); });
  pfree(bytes);
  if (!st->handle) st->handle = new_model_handle(st->mcxt);
  st->handle->model = handle->model;
  st->model = handle->model.get();
  strlcpy(st->model_sha, c.sha, sizeof(st->model_sha));
  st->label = MemoryContextStrdup(st->mcxt, c.label);
  st->generation = catalog_generation;
  if (c.by_name) {
    st->ref = MemoryContextStrdup(st->mcxt, c.ref);
  } else {
    strlcpy(st->value_sha, c.sha, sizeof(st->value_sha));
    st->audit_generation = catalog_generation;
  }
  st->audit_mode = static_cast<AuditMode>(c.audit_mode);
  st->audit_rate = c.audit_rate;
  st->audit_sync = c.audit_sync;
  st->audit_version = c.audit_version;
  strlcpy(st->audit_model, c.audit_model, sizeof(st->audit_model));
  elog(DEBUG1, "flock: parallel worker got model %s (sha256 %.12s, %zu bytes) from its leader", st->label, c.sha,
       static_cast<size_t>(c.length));
  return true;
}

}  // namespace flock::pg
