// The row part of a data set's content hash (README "Data sets: the content hash"), in C:
// - definition "text" (flock._table_hash_sql, 12_datasets.sql): sha256 of every row's text form
//   (record_out, under the output settings the SQL function pins), in one heap scan of a snapshot;
// - definition "binary": sha256 of every row in PostgreSQL's binary COPY form, from a heap scan or
//   any query, and while flock.snapshot_dataset writes the snapshot (snapshot_write: the rows are
//   copied and hashed once).
// Either way the row hashes are sorted, hashed 8192 at a time, the chunk hashes concatenated.
// Heap scans only where no row-level security applies (a heap scan would bypass it). Plain C style.
#include "train.hpp"  // must come first

#include "table_hash.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "catalog/pg_class.h"
#include "common/cryptohash.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "tcop/dest.h"
#include "utils/fmgroids.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
}
#undef flock

// The row hashes use OpenSSL's SHA-256 directly: through pg_cryptohash (EVP) every row's hash
// started with a provider lookup under a lock, which cost more than the hashing.
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#undef flock

#include <cstdlib>
#include <cstring>

extern "C" {
PG_FUNCTION_INFO_V1(flock_table_hash_chunks);
PG_FUNCTION_INFO_V1(flock_binary_hashable);
}

namespace {

constexpr int kDigest = PG_SHA256_DIGEST_LENGTH;
constexpr int64 kHashesPerChunk = 8192;  // as in flock._table_hash
constexpr int64 kRowsPerReset = 4096;

// A row digest, sorted by an inlined quicksort (PostgreSQL's sort_template.h) that compares the
// first 8 bytes as one big-endian number before the rest.
struct Digest {
  uint8 bytes[kDigest];
};
inline int compare_digest_keys(const Digest* a, const Digest* b) {
  uint64 x, y;
  memcpy(&x, a->bytes, 8);
  memcpy(&y, b->bytes, 8);
  if (x != y) return pg_bswap64(x) < pg_bswap64(y) ? -1 : 1;
  return memcmp(a->bytes + 8, b->bytes + 8, kDigest - 8);
}
#define ST_SORT sort_digests
#define ST_ELEMENT_TYPE Digest
#define ST_COMPARE(a, b) compare_digest_keys(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

void sha256(const uint8* data, size_t length, uint8* out) {
  pg_cryptohash_ctx* ctx = pg_cryptohash_create(PG_SHA256);
  if (pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, data, length) < 0 ||
      pg_cryptohash_final(ctx, out, kDigest) < 0)
    elog(ERROR, "could not compute SHA-256");
  pg_cryptohash_free(ctx);
}

// Sorts `rows` row digests in place and returns their chunk hashes, concatenated.
bytea* sorted_chunk_hashes(uint8* digests, int64 rows) {
  sort_digests(reinterpret_cast<Digest*>(digests), rows);
  const int64 nchunks = (rows + kHashesPerChunk - 1) / kHashesPerChunk;
  bytea* chunks = static_cast<bytea*>(palloc(VARHDRSZ + nchunks * kDigest));
  SET_VARSIZE(chunks, VARHDRSZ + nchunks * kDigest);
  for (int64 c = 0; c < nchunks; ++c) {
    const int64 first = c * kHashesPerChunk;
    const int64 count = Min(kHashesPerChunk, rows - first);
    sha256(digests + first * kDigest, count * kDigest,
           reinterpret_cast<uint8*>(VARDATA(chunks)) + c * kDigest);
  }
  return chunks;
}

// May a heap scan of `relid` stand for SELECT * FROM it? A plain table the user may read, without
// row-level security.
bool heap_scan_allowed(Oid relid) {
  return get_rel_relkind(relid) == RELKIND_RELATION &&
         check_enable_rls(relid, InvalidOid, true) == RLS_NONE &&
         pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
}

}  // namespace

namespace flock::pg {

namespace {

// How a column's value is written: the common fixed-size types and UTF-8 text directly (the bytes
// their send functions produce), anything else through its send function.
enum class SendKind : char { Int2, Int4, Int8, Float4, Float8, Bool, Text, Other };

inline void put16(char** out, uint16 v) {
  v = pg_hton16(v);
  memcpy(*out, &v, 2);
  *out += 2;
}
inline void put32(char** out, uint32 v) {
  v = pg_hton32(v);
  memcpy(*out, &v, 4);
  *out += 4;
}
inline void put64(char** out, uint64 v) {
  v = pg_hton64(v);
  memcpy(*out, &v, 8);
  *out += 8;
}
// A length and `length` bytes, making room for them and for the fixed-size fields after them.
inline void put_bytes(StringInfo buf, char** out, const char* data, int32 length, int room_after) {
  put32(out, static_cast<uint32>(length));
  buf->len = static_cast<int>(*out - buf->data);
  enlargeStringInfo(buf, length + room_after);
  *out = buf->data + buf->len;
  memcpy(*out, data, length);
  *out += length;
}

bool binary_hashable_type(Oid type) {
  Oid base = getBaseType(type);
  char kind = get_typtype(base);
  if (kind == TYPTYPE_COMPOSITE || kind == TYPTYPE_PSEUDO) return false;
  // array_send writes the element type's OID: only types whose OID every database shares.
  Oid element = get_element_type(base);
  if (OidIsValid(element) && (element >= FirstGenbkiObjectId || get_typtype(element) == TYPTYPE_COMPOSITE))
    return false;
  HeapTuple tuple = SearchSysCache1(TYPEOID, ObjectIdGetDatum(base));
  if (!HeapTupleIsValid(tuple)) return false;
  bool has_send = OidIsValid(reinterpret_cast<Form_pg_type>(GETSTRUCT(tuple))->typsend);
  ReleaseSysCache(tuple);
  return has_send;
}

}  // namespace

struct BinaryHasher {
  int natts;
  int16 fields;  // columns not dropped
  bool* dropped;
  SendKind* kinds;
  FmgrInfo* send;
  StringInfoData row;
  SHA256_CTX ctx;
  uint8* digests;
  int64 rows;
  int64 capacity;
};

bool binary_hashable(TupleDesc desc) {
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (!att->attisdropped && !binary_hashable_type(att->atttypid)) return false;
  }
  return true;
}

BinaryHasher* binary_hasher_begin(TupleDesc desc) {
  BinaryHasher* h = static_cast<BinaryHasher*>(palloc0(sizeof(BinaryHasher)));
  h->natts = desc->natts;
  h->dropped = static_cast<bool*>(palloc0(sizeof(bool) * Max(desc->natts, 1)));
  h->kinds = static_cast<SendKind*>(palloc0(sizeof(SendKind) * Max(desc->natts, 1)));
  h->send = static_cast<FmgrInfo*>(palloc0(sizeof(FmgrInfo) * Max(desc->natts, 1)));
  const bool utf8 = GetDatabaseEncoding() == PG_UTF8;
  for (int i = 0; i < desc->natts; ++i) {
    Form_pg_attribute att = TupleDescAttr(desc, i);
    if (att->attisdropped) {
      h->dropped[i] = true;
      continue;
    }
    ++h->fields;
    switch (getBaseType(att->atttypid)) {
      case INT2OID:
        h->kinds[i] = SendKind::Int2;
        break;
      case INT4OID:
        h->kinds[i] = SendKind::Int4;
        break;
      case INT8OID:
        h->kinds[i] = SendKind::Int8;
        break;
      case FLOAT4OID:
        h->kinds[i] = SendKind::Float4;
        break;
      case FLOAT8OID:
        h->kinds[i] = SendKind::Float8;
        break;
      case BOOLOID:
        h->kinds[i] = SendKind::Bool;
        break;
      case TEXTOID:
      case VARCHAROID:
      case BPCHAROID:
        h->kinds[i] = utf8 ? SendKind::Text : SendKind::Other;
        break;
      default:
        h->kinds[i] = SendKind::Other;
        break;
    }
    if (h->kinds[i] == SendKind::Other) {
      Oid send_function;
      bool is_varlena;
      getTypeBinaryOutputInfo(att->atttypid, &send_function, &is_varlena);
      fmgr_info(send_function, &h->send[i]);
    }
  }
  initStringInfo(&h->row);
  h->capacity = 1024;
  h->digests = static_cast<uint8*>(MemoryContextAllocHuge(CurrentMemoryContext, h->capacity * kDigest));
  return h;
}

// The row as binary COPY writes it: int16 field count, then per column int32 length (-1: NULL)
// and the send function's bytes, all integers big-endian. Allocations go to the current memory
// context (the caller resets it now and then).
void binary_hasher_add(BinaryHasher* h, const Datum* values, const bool* nulls) {
  StringInfo buf = &h->row;
  resetStringInfo(buf);
  // Room for the field count and every fixed-size field (length + at most 8 bytes); text and
  // other send forms make room for themselves.
  enlargeStringInfo(buf, 2 + 12 * h->natts);
  char* out = buf->data;
  put16(&out, static_cast<uint16>(h->fields));
  for (int i = 0; i < h->natts; ++i) {
    if (h->dropped[i]) continue;
    if (nulls[i]) {
      put32(&out, static_cast<uint32>(-1));
      continue;
    }
    Datum v = values[i];
    switch (h->kinds[i]) {
      case SendKind::Int2:
        put32(&out, 2);
        put16(&out, static_cast<uint16>(DatumGetInt16(v)));
        break;
      case SendKind::Int4:
        put32(&out, 4);
        put32(&out, static_cast<uint32>(DatumGetInt32(v)));
        break;
      case SendKind::Int8:
        put32(&out, 8);
        put64(&out, static_cast<uint64>(DatumGetInt64(v)));
        break;
      case SendKind::Float4: {
        float f = DatumGetFloat4(v);
        uint32 bits;
        memcpy(&bits, &f, 4);
        put32(&out, 4);
        put32(&out, bits);
        break;
      }
      case SendKind::Float8: {
        double d = DatumGetFloat8(v);
        uint64 bits;
        memcpy(&bits, &d, 8);
        put32(&out, 8);
        put64(&out, bits);
        break;
      }
      case SendKind::Bool:
        put32(&out, 1);
        *out++ = DatumGetBool(v) ? 1 : 0;
        break;
      case SendKind::Text: {
        text* t = DatumGetTextPP(v);
        put_bytes(buf, &out, VARDATA_ANY(t), static_cast<int32>(VARSIZE_ANY_EXHDR(t)), 12 * h->natts);
        break;
      }
      case SendKind::Other: {
        bytea* sent = SendFunctionCall(&h->send[i], v);
        put_bytes(buf, &out, VARDATA(sent), static_cast<int32>(VARSIZE(sent) - VARHDRSZ), 12 * h->natts);
        break;
      }
    }
  }
  buf->len = static_cast<int>(out - buf->data);
  if (h->rows == h->capacity) {
    h->capacity *= 2;
    h->digests = static_cast<uint8*>(repalloc_huge(h->digests, h->capacity * kDigest));
  }
  if (SHA256_Init(&h->ctx) != 1 || SHA256_Update(&h->ctx, buf->data, buf->len) != 1 ||
      SHA256_Final(h->digests + h->rows * kDigest, &h->ctx) != 1)
    elog(ERROR, "could not compute SHA-256");
  ++h->rows;
}

int64 binary_hasher_rows(const BinaryHasher* h) { return h->rows; }

bytea* binary_hasher_finish(BinaryHasher* h) {
  bytea* chunks = sorted_chunk_hashes(h->digests, h->rows);
  pfree(h->digests);
  h->digests = nullptr;
  return chunks;
}

int binary_hash_pin_encoding() {
  if (pg_get_client_encoding() == PG_UTF8) return -1;
  int nest = NewGUCNestLevel();
  (void)set_config_option("client_encoding", "UTF8", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                          false);
  return nest;
}

void binary_hash_unpin_encoding(int nest) {
  if (nest >= 0) AtEOXact_GUC(true, nest);
}

namespace {

// The receiver of snapshot_write's query: each row hashed, then inserted as CREATE TABLE AS does.
struct SnapshotReceiver {
  DestReceiver pub;  // first: the executor sees a DestReceiver
  Relation rel;
  CommandId cid;
  BulkInsertState bulk;
  BinaryHasher* hasher;
  TrainingCapture* capture;  // flock.train's copy of the numeric columns, when it asked for one
  MemoryContext per_rows;
};

bool snapshot_receive(TupleTableSlot* slot, DestReceiver* self) {
  SnapshotReceiver* r = reinterpret_cast<SnapshotReceiver*>(self);
  slot_getallattrs(slot);
  MemoryContext old = MemoryContextSwitchTo(r->per_rows);
  binary_hasher_add(r->hasher, slot->tts_values, slot->tts_isnull);
  if (r->capture != nullptr) training_capture_add(r->capture, slot->tts_values, slot->tts_isnull);
  MemoryContextSwitchTo(old);
  table_tuple_insert(r->rel, slot, r->cid, TABLE_INSERT_SKIP_FSM, r->bulk);
  if (binary_hasher_rows(r->hasher) % kRowsPerReset == 0) {
    MemoryContextReset(r->per_rows);
    CHECK_FOR_INTERRUPTS();
  }
  return true;
}

void snapshot_startup(DestReceiver* self, int, TupleDesc desc) {
  SnapshotReceiver* r = reinterpret_cast<SnapshotReceiver*>(self);
  TupleDesc table = RelationGetDescr(r->rel);
  bool same = table->natts == desc->natts;
  for (int i = 0; same && i < desc->natts; ++i)
    same = TupleDescAttr(table, i)->atttypid == TupleDescAttr(desc, i)->atttypid &&
           TupleDescAttr(table, i)->attisdropped == TupleDescAttr(desc, i)->attisdropped;
  if (!same) elog(ERROR, "the snapshot's table does not have the columns of its query");
}

void snapshot_shutdown(DestReceiver*) {}
void snapshot_destroy(DestReceiver*) {}

}  // namespace

bytea* snapshot_write(const char* sql, Oid relid, int64* rows) {
  SnapshotReceiver* r = static_cast<SnapshotReceiver*>(palloc0(sizeof(SnapshotReceiver)));
  r->pub.receiveSlot = snapshot_receive;
  r->pub.rStartup = snapshot_startup;
  r->pub.rShutdown = snapshot_shutdown;
  r->pub.rDestroy = snapshot_destroy;
  r->pub.mydest = DestNone;
  r->rel = table_open(relid, RowExclusiveLock);
  r->cid = GetCurrentCommandId(true);
  r->bulk = GetBulkInsertState();
  r->hasher = binary_hasher_begin(RelationGetDescr(r->rel));
  r->capture = training_capture_begin(RelationGetDescr(r->rel));
  r->per_rows = AllocSetContextCreate(CurrentMemoryContext, "flock snapshot rows", ALLOCSET_DEFAULT_SIZES);
  SPIExecuteOptions options;
  memset(&options, 0, sizeof(options));
  options.read_only = false;
  options.allow_nonatomic = false;
  options.dest = &r->pub;
  if (pg_get_client_encoding() != PG_UTF8) elog(ERROR, "snapshot_write needs client_encoding UTF8");
  int rc = SPI_execute_extended(sql, &options);
  if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
    elog(ERROR, "the snapshot's query failed: %s", SPI_result_code_string(rc));
  if (r->capture != nullptr) training_capture_end(r->capture, relid);
  FreeBulkInsertState(r->bulk);
  table_finish_bulk_insert(r->rel, TABLE_INSERT_SKIP_FSM);
  table_close(r->rel, NoLock);
  MemoryContextDelete(r->per_rows);
  *rows = binary_hasher_rows(r->hasher);
  return binary_hasher_finish(r->hasher);
}

namespace {

// The binary definition's chunk hashes of relation `relid`: a heap scan where it may stand for
// SELECT * (heap_scan_allowed), else that query through SPI.
bytea* binary_chunks_of(Oid relid, int64* rows) {
  int nest = binary_hash_pin_encoding();
  bytea* chunks;
  if (heap_scan_allowed(relid)) {
    Relation rel = table_open(relid, AccessShareLock);
    BinaryHasher* hasher = binary_hasher_begin(RelationGetDescr(rel));
    MemoryContext per_rows =
        AllocSetContextCreate(CurrentMemoryContext, "flock table hash", ALLOCSET_DEFAULT_SIZES);
    TableScanDesc scan = table_beginscan_strat(rel, GetActiveSnapshot(), 0, nullptr, true, false);
    TupleTableSlot* slot = table_slot_create(rel, nullptr);
    while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
      slot_getallattrs(slot);
      MemoryContext old = MemoryContextSwitchTo(per_rows);
      binary_hasher_add(hasher, slot->tts_values, slot->tts_isnull);
      MemoryContextSwitchTo(old);
      if (binary_hasher_rows(hasher) % kRowsPerReset == 0) {
        MemoryContextReset(per_rows);
        CHECK_FOR_INTERRUPTS();
      }
    }
    ExecDropSingleTupleTableSlot(slot);
    table_endscan(scan);
    table_close(rel, AccessShareLock);
    MemoryContextDelete(per_rows);
    *rows = binary_hasher_rows(hasher);
    chunks = binary_hasher_finish(hasher);
  } else {
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    char* sql = psprintf(
        "SELECT * FROM %s",
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)), get_rel_name(relid)));
    SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
    if (plan == nullptr) elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, true);
    BinaryHasher* hasher = nullptr;
    MemoryContext per_batch =
        AllocSetContextCreate(CurrentMemoryContext, "flock table hash", ALLOCSET_DEFAULT_SIZES);
    for (;;) {
      SPI_cursor_fetch(portal, true, 1000);
      if (SPI_processed == 0) break;
      TupleDesc desc = SPI_tuptable->tupdesc;
      MemoryContext old = MemoryContextSwitchTo(per_batch);
      if (hasher == nullptr) {
        MemoryContextSwitchTo(old);
        hasher = binary_hasher_begin(desc);
        MemoryContextSwitchTo(per_batch);
      }
      Datum* values = static_cast<Datum*>(palloc(sizeof(Datum) * Max(desc->natts, 1)));
      bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * Max(desc->natts, 1)));
      for (uint64 i = 0; i < SPI_processed; ++i) {
        heap_deform_tuple(SPI_tuptable->vals[i], desc, values, nulls);
        binary_hasher_add(hasher, values, nulls);
      }
      MemoryContextSwitchTo(old);
      MemoryContextReset(per_batch);
      SPI_freetuptable(SPI_tuptable);
      CHECK_FOR_INTERRUPTS();
    }
    if (hasher == nullptr) hasher = binary_hasher_begin(portal->tupDesc);
    SPI_cursor_close(portal);
    *rows = binary_hasher_rows(hasher);
    bytea* local = binary_hasher_finish(hasher);
    chunks = static_cast<bytea*>(SPI_palloc(VARSIZE(local)));
    memcpy(chunks, local, VARSIZE(local));
    SPI_finish();
  }
  binary_hash_unpin_encoding(nest);
  return chunks;
}

}  // namespace
}  // namespace flock::pg

using namespace flock::pg;

// flock._binary_hashable(rel regclass): can the binary definition hash every column of rel?
extern "C" Datum flock_binary_hashable(PG_FUNCTION_ARGS) {
  Relation rel = relation_open(PG_GETARG_OID(0), AccessShareLock);
  bool hashable = binary_hashable(RelationGetDescr(rel));
  relation_close(rel, AccessShareLock);
  PG_RETURN_BOOL(hashable);
}

// flock._table_hash_chunks(rel regclass, method text, OUT row_count bigint, OUT chunks bytea):
// method 'binary' from a heap scan or SELECT * FROM rel; method 'text' from a heap scan of a
// snapshot only, NULL columns otherwise (the caller then uses the SQL definition).
extern "C" Datum flock_table_hash_chunks(PG_FUNCTION_ARGS) {
  Oid relid = PG_GETARG_OID(0);
  char* method = text_to_cstring(PG_GETARG_TEXT_PP(1));
  TupleDesc result_desc;
  if (get_call_result_type(fcinfo, nullptr, &result_desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "flock._table_hash_chunks must return a record");
  Datum values[2] = {0, 0};
  bool nulls[2] = {true, true};
  if (strcmp(method, "binary") == 0) {
    int64 rows = 0;
    bytea* chunks = binary_chunks_of(relid, &rows);
    values[0] = Int64GetDatum(rows);
    values[1] = PointerGetDatum(chunks);
    nulls[0] = nulls[1] = false;
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
  }
  if (strcmp(method, "text") != 0)
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("unknown content hash definition \"%s\"", method),
                    errhint("The definitions are 'text' and 'binary'.")));
  const char* schema = get_namespace_name(get_rel_namespace(relid));
  if (schema == nullptr || strcmp(schema, "flock_data") != 0 || get_rel_relkind(relid) != RELKIND_RELATION ||
      check_enable_rls(relid, InvalidOid, true) != RLS_NONE ||
      pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));

  Relation rel = table_open(relid, AccessShareLock);
  TupleDesc desc = RelationGetDescr(rel);
  FmgrInfo record_out;
  fmgr_info(F_RECORD_OUT, &record_out);
  MemoryContext per_rows =
      AllocSetContextCreate(CurrentMemoryContext, "flock table hash", ALLOCSET_DEFAULT_SIZES);
  int64 capacity = 1024, rows = 0;
  uint8* digests = static_cast<uint8*>(MemoryContextAllocHuge(CurrentMemoryContext, capacity * kDigest));
  TableScanDesc scan = table_beginscan_strat(rel, GetActiveSnapshot(), 0, nullptr, true, false);
  TupleTableSlot* slot = table_slot_create(rel, nullptr);
  while (table_scan_getnextslot(scan, ForwardScanDirection, slot)) {
    if (rows == capacity) {
      capacity *= 2;
      digests = static_cast<uint8*>(repalloc_huge(digests, capacity * kDigest));
    }
    MemoryContext old = MemoryContextSwitchTo(per_rows);
    bool should_free;
    HeapTuple tuple = ExecFetchSlotHeapTuple(slot, false, &should_free);
    char* text = OutputFunctionCall(&record_out, heap_copy_tuple_as_datum(tuple, desc));
    char* utf8 = pg_server_to_any(text, strlen(text), PG_UTF8);
    sha256(reinterpret_cast<const uint8*>(utf8), strlen(utf8), digests + rows * kDigest);
    MemoryContextSwitchTo(old);
    if (++rows % kRowsPerReset == 0) {
      MemoryContextReset(per_rows);
      CHECK_FOR_INTERRUPTS();
    }
  }
  ExecDropSingleTupleTableSlot(slot);
  table_endscan(scan);
  table_close(rel, AccessShareLock);

  bytea* chunks = sorted_chunk_hashes(digests, rows);
  values[0] = Int64GetDatum(rows);
  values[1] = PointerGetDatum(chunks);
  nulls[0] = nulls[1] = false;
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
}
