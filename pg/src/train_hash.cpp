// flock._table_hash_chunks(rel): the row part of a data set's content hash (flock._table_hash's
// definition, 12_datasets.sql) computed in one heap scan instead of SQL's window and aggregates:
// sha256 of every row's text form (record_out, under the output settings the SQL function pins),
// sorted, hashed 8192 at a time, the chunk hashes concatenated. flock._table_hash (14_train.sql)
// uses it for the data set snapshots, which have no row-level security (a heap scan would bypass
// it); anything else goes through the SQL definition. Plain C style.
#include "train.hpp"  // must come first

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "common/cryptohash.h"
#include "executor/tuptable.h"
#include "mb/pg_wchar.h"
#include "utils/fmgroids.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
}
#undef flock

#include <cstdlib>
#include <cstring>

extern "C" {
PG_FUNCTION_INFO_V1(flock_table_hash_chunks);
}

namespace {

constexpr int kDigest = PG_SHA256_DIGEST_LENGTH;
constexpr int64 kHashesPerChunk = 8192;  // as in flock._table_hash
constexpr int64 kRowsPerReset = 4096;

int compare_digests(const void* a, const void* b) { return memcmp(a, b, kDigest); }

void sha256(const uint8* data, size_t length, uint8* out) {
  pg_cryptohash_ctx* ctx = pg_cryptohash_create(PG_SHA256);
  if (pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, data, length) < 0 ||
      pg_cryptohash_final(ctx, out, kDigest) < 0)
    elog(ERROR, "could not compute SHA-256");
  pg_cryptohash_free(ctx);
}

}  // namespace

// flock._table_hash_chunks(rel regclass, OUT row_count bigint, OUT chunks bytea): NULL columns
// when the relation is not a snapshot the fast path may read (the caller then uses SQL).
extern "C" Datum flock_table_hash_chunks(PG_FUNCTION_ARGS) {
  Oid relid = PG_GETARG_OID(0);
  TupleDesc result_desc;
  if (get_call_result_type(fcinfo, nullptr, &result_desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "flock._table_hash_chunks must return a record");
  Datum values[2] = {0, 0};
  bool nulls[2] = {true, true};
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

  qsort(digests, rows, kDigest, compare_digests);
  const int64 nchunks = (rows + kHashesPerChunk - 1) / kHashesPerChunk;
  bytea* chunks = static_cast<bytea*>(palloc(VARHDRSZ + nchunks * kDigest));
  SET_VARSIZE(chunks, VARHDRSZ + nchunks * kDigest);
  for (int64 c = 0; c < nchunks; ++c) {
    const int64 first = c * kHashesPerChunk;
    const int64 count = Min(kHashesPerChunk, rows - first);
    sha256(digests + first * kDigest, count * kDigest,
           reinterpret_cast<uint8*>(VARDATA(chunks)) + c * kDigest);
  }
  values[0] = Int64GetDatum(rows);
  values[1] = PointerGetDatum(chunks);
  nulls[0] = nulls[1] = false;
  PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(result_desc), values, nulls)));
}
