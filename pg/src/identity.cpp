// Whom Flock acts for, and running someone else's stored SQL as its author.
//
// Flock acts for the effective role: current_user at the moment a Flock function is called, as
// PostgreSQL's own privilege checks do. A SECURITY DEFINER function cannot see its invoker's
// current_user, so the public governance functions are SECURITY INVOKER C entry points
// (flock_entry, one C function bound to many SQL signatures). Each notes GetUserId() as the role it
// acts for, then calls its implementation flock._<name> (same argument types, SECURITY DEFINER,
// owned by the extension owner, not executable by PUBLIC). flock._caller() answers from that note.
// Nested calls made by an implementation itself (it runs as its owner) keep acting for the
// original caller; anything else, including another role's SECURITY DEFINER function, starts afresh
// from its own current_user. Only this file sets the note, and only from GetUserId(), so no role can
// make Flock act for a role it is not.
//
// A data set's recorded query is re-run (verify) as the role that recorded it, inside a
// security-restricted operation with its recorded search_path, as PostgreSQL does for REFRESH
// MATERIALIZED VIEW and index expressions; only roles that may act as that role may have it re-run.
//
// Plain C style throughout: these frames hold no C++ objects, so PostgreSQL errors may unwind them.
#include "pg.hpp"  // must come first

#include "table_hash.hpp"
#include "train.hpp"

extern "C" {
#include "catalog/pg_proc.h"
#include "mb/pg_wchar.h"
#include "parser/parse_func.h"
#include "utils/fmgroids.h"
#include "utils/portal.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/tuplesort.h"
#include "utils/varlena.h"
}
#undef flock

extern "C" {
PG_FUNCTION_INFO_V1(flock_entry);
PG_FUNCTION_INFO_V1(flock_caller);
PG_FUNCTION_INFO_V1(flock_may_act_as);
PG_FUNCTION_INFO_V1(flock_snapshot_dataset);
PG_FUNCTION_INFO_V1(flock_source_hash);
}

namespace {

// The role the innermost active Flock entry point acts for, and the role its implementation runs
// as. InvalidOid: no entry point active, or user code running on behalf of one (a barrier).
Oid acting_for = InvalidOid;
Oid acting_as = InvalidOid;

// The role a Flock entry point called now acts for.
Oid effective_caller() {
  Oid user = GetUserId();
  // Called by a Flock implementation itself (it runs as its owner): keep acting for its caller.
  if (OidIsValid(acting_for) && user == acting_as) return acting_for;
  return user;
}

struct Implementation {
  FmgrInfo fn;
  Oid owner;
};

// Finds flock._<name>(same argument types) for the entry point `entry` and checks that it is what
// an entry point may call: SECURITY DEFINER, owned by the entry point's owner, same result type.
Oid find_implementation(Oid entry, Oid* owner) {
  HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(entry));
  if (!HeapTupleIsValid(tuple)) elog(ERROR, "cache lookup failed for function %u", entry);
  Form_pg_proc proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
  char* name = psprintf("_%s", NameStr(proc->proname));
  List* qualified = list_make2(makeString(get_namespace_name(proc->pronamespace)), makeString(name));
  Oid impl = LookupFuncName(qualified, proc->pronargs, proc->proargtypes.values, true);
  Oid entry_owner = proc->proowner, rettype = proc->prorettype;
  bool retset = proc->proretset, strict = proc->proisstrict, secdef = proc->prosecdef;
  ReleaseSysCache(tuple);
  if (!OidIsValid(impl) || secdef)
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                    errmsg("Flock entry point %s has no implementation", format_procedure(entry)),
                    errhint("Reinstall the extension: DROP EXTENSION flock; CREATE EXTENSION flock.")));
  tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(impl));
  if (!HeapTupleIsValid(tuple)) elog(ERROR, "cache lookup failed for function %u", impl);
  proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
  bool fits = proc->prosecdef && proc->proowner == entry_owner && proc->prorettype == rettype &&
              proc->proretset == retset && proc->proisstrict == strict;
  *owner = proc->proowner;
  ReleaseSysCache(tuple);
  if (!fits)
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                    errmsg("implementation %s of Flock entry point %s is not one it may call", format_procedure(impl),
                           format_procedure(entry)),
                    errhint("Reinstall the extension: DROP EXTENSION flock; CREATE EXTENSION flock.")));
  return impl;
}

// Calls `impl` with fcinfo's arguments, context and result info, acting for `caller`.
Datum call_acting_for(Oid caller, Implementation* impl, FunctionCallInfo fcinfo) {
  FunctionCallInfo inner = static_cast<FunctionCallInfo>(palloc(SizeForFunctionCallInfo(fcinfo->nargs)));
  InitFunctionCallInfoData(*inner, &impl->fn, fcinfo->nargs, fcinfo->fncollation, fcinfo->context,
                           fcinfo->resultinfo);
  memcpy(inner->args, fcinfo->args, sizeof(NullableDatum) * fcinfo->nargs);
  Oid saved_for = acting_for, saved_as = acting_as;
  volatile Datum result = 0;
  acting_for = caller;
  acting_as = impl->owner;
  PG_TRY();
  {
    result = FunctionCallInvoke(inner);
  }
  PG_FINALLY();
  {
    acting_for = saved_for;
    acting_as = saved_as;
  }
  PG_END_TRY();
  fcinfo->isnull = inner->isnull;
  return result;
}

Implementation* implementation_of(FunctionCallInfo fcinfo) {
  FmgrInfo* flinfo = fcinfo->flinfo;
  if (flinfo->fn_extra == nullptr) {
    Oid owner;
    Oid impl = find_implementation(flinfo->fn_oid, &owner);
    Implementation* cached = static_cast<Implementation*>(MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(Implementation)));
    fmgr_info_cxt(impl, &cached->fn, flinfo->fn_mcxt);
    cached->fn.fn_expr = flinfo->fn_expr;
    cached->owner = owner;
    flinfo->fn_extra = cached;
  }
  return static_cast<Implementation*>(flinfo->fn_extra);
}

// Sets a GUC for the current GUC nest level (undone by AtEOXact_GUC of that level).
void set_for_nest_level(const char* name, const char* value) {
  (void)set_config_option(name, value, superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                          false);
}

// The recorded search_path with pg_temp searched last unless it names pg_temp: the verifier's
// temporary tables must not stand in for the author's tables.
char* safe_search_path(const char* recorded) {
  char* copy = pstrdup(recorded);
  List* names = NIL;
  if (SplitIdentifierString(copy, ',', &names)) {
    ListCell* cell;
    foreach (cell, names) {
      const char* item = static_cast<const char*>(lfirst(cell));
      if (strcmp(item, "pg_temp") == 0 || strncmp(item, "pg_temp_", 8) == 0) return pstrdup(recorded);
    }
  }
  return recorded[0] == '\0' ? pstrdup("pg_temp") : psprintf("%s, pg_temp", recorded);
}

// The query body as snapshot_dataset ran it: without trailing white space and semicolons.
char* query_body(const char* query) {
  char* body = pstrdup(query);
  size_t len = strlen(body);
  while (len > 0 && (body[len - 1] == ';' || strchr(" \t\n\r\f\v", body[len - 1]) != nullptr)) --len;
  body[len] = '\0';
  return body;
}

bool may_act_as(Oid role) { return OidIsValid(role) && is_member_of_role(GetUserId(), role); }

constexpr int kHashesPerChunk = 8192;  // as in flock._table_hash
constexpr long kFetchRows = 1000;

// Feeds the sorted row hashes to the chunk hashes: returns the concatenated chunk hashes.
bytea* chunk_hashes(Tuplesortstate* sorted, int64 rows) {
  int64 nchunks = (rows + kHashesPerChunk - 1) / kHashesPerChunk;
  bytea* chunks = static_cast<bytea*>(palloc(VARHDRSZ + nchunks * PG_SHA256_DIGEST_LENGTH));
  SET_VARSIZE(chunks, VARHDRSZ + nchunks * PG_SHA256_DIGEST_LENGTH);
  uint8* out = reinterpret_cast<uint8*>(VARDATA(chunks));
  pg_cryptohash_ctx* ctx = nullptr;
  int64 in_chunk = 0;
  Datum value;
  bool isnull;
  while (tuplesort_getdatum(sorted, true, &value, &isnull, nullptr)) {
    if (ctx == nullptr) {
      ctx = pg_cryptohash_create(PG_SHA256);
      if (pg_cryptohash_init(ctx) < 0) elog(ERROR, "could not initialize SHA-256");
    }
    bytea* h = DatumGetByteaPP(value);
    if (pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(VARDATA_ANY(h)), VARSIZE_ANY_EXHDR(h)) < 0)
      elog(ERROR, "could not compute SHA-256");
    if (++in_chunk == kHashesPerChunk) {
      if (pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0) elog(ERROR, "could not compute SHA-256");
      pg_cryptohash_free(ctx);
      ctx = nullptr;
      out += PG_SHA256_DIGEST_LENGTH;
      in_chunk = 0;
    }
  }
  if (ctx != nullptr) {
    if (pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0) elog(ERROR, "could not compute SHA-256");
    pg_cryptohash_free(ctx);
  }
  return chunks;
}

// sha256(convert_to(row::text, 'UTF8')) of every fetched row into `sorted`, under the output
// settings flock._table_hash pins, so the hash does not depend on the session's.
void hash_rows(SPITupleTable* table, uint64 n, TupleDesc desc, FmgrInfo* record_out, Tuplesortstate* sorted,
               MemoryContext per_batch) {
  int nest = NewGUCNestLevel();
  set_for_nest_level("TimeZone", "UTC");
  set_for_nest_level("DateStyle", "ISO, YMD");
  set_for_nest_level("IntervalStyle", "postgres");
  set_for_nest_level("extra_float_digits", "1");
  set_for_nest_level("bytea_output", "hex");
  MemoryContext old = MemoryContextSwitchTo(per_batch);
  for (uint64 i = 0; i < n; ++i) {
    Datum row = heap_copy_tuple_as_datum(table->vals[i], desc);
    char* text = OutputFunctionCall(record_out, row);
    char* utf8 = pg_server_to_any(text, strlen(text), PG_UTF8);
    bytea* h = static_cast<bytea*>(palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH));
    SET_VARSIZE(h, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
    pg_cryptohash_ctx* ctx = pg_cryptohash_create(PG_SHA256);
    if (pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(utf8), strlen(utf8)) < 0 ||
        pg_cryptohash_final(ctx, reinterpret_cast<uint8*>(VARDATA(h)), PG_SHA256_DIGEST_LENGTH) < 0)
      elog(ERROR, "could not compute SHA-256");
    pg_cryptohash_free(ctx);
    tuplesort_putdatum(sorted, PointerGetDatum(h), false);
  }
  MemoryContextSwitchTo(old);
  MemoryContextReset(per_batch);
  AtEOXact_GUC(true, nest);
}

// Runs `sql` through a cursor and feeds the hashes of its rows to `sorted`; returns the result's
// row type (blessed) and the number of rows.
void run_and_hash(const char* sql, FmgrInfo* record_out, Tuplesortstate* sorted, MemoryContext per_batch,
                  TupleDesc* row_desc, int64* rows) {
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
  Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, false);
  *row_desc = BlessTupleDesc(CreateTupleDescCopy(portal->tupDesc));
  *rows = 0;
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);
    uint64 n = SPI_processed;
    if (n == 0) break;
    hash_rows(SPI_tuptable, n, *row_desc, record_out, sorted, per_batch);
    *rows += n;
    SPI_freetuptable(SPI_tuptable);
    CHECK_FOR_INTERRUPTS();
  }
  SPI_cursor_close(portal);
}

// Binary definition: the hashes of the rows `sql` gives, as chunk hashes (table_hash.hpp). The
// client encoding is pinned to UTF8 only while rows are hashed, not while the query runs.
bytea* run_and_hash_binary(const char* sql, MemoryContext per_batch, TupleDesc* row_desc, int64* rows) {
  SPIPlanPtr plan = SPI_prepare(sql, 0, nullptr);
  if (plan == nullptr) elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
  Portal portal = SPI_cursor_open(nullptr, plan, nullptr, nullptr, false);
  *row_desc = BlessTupleDesc(CreateTupleDescCopy(portal->tupDesc));
  flock::pg::BinaryHasher* hasher = flock::pg::binary_hasher_begin(*row_desc);
  Datum* values = static_cast<Datum*>(palloc(sizeof(Datum) * Max((*row_desc)->natts, 1)));
  bool* nulls = static_cast<bool*>(palloc(sizeof(bool) * Max((*row_desc)->natts, 1)));
  for (;;) {
    SPI_cursor_fetch(portal, true, kFetchRows);
    uint64 n = SPI_processed;
    if (n == 0) break;
    int nest = flock::pg::binary_hash_pin_encoding();
    MemoryContext old = MemoryContextSwitchTo(per_batch);
    for (uint64 i = 0; i < n; ++i) {
      heap_deform_tuple(SPI_tuptable->vals[i], *row_desc, values, nulls);
      flock::pg::binary_hasher_add(hasher, values, nulls);
    }
    MemoryContextSwitchTo(old);
    MemoryContextReset(per_batch);
    flock::pg::binary_hash_unpin_encoding(nest);
    SPI_freetuptable(SPI_tuptable);
    CHECK_FOR_INTERRUPTS();
  }
  SPI_cursor_close(portal);
  *rows = flock::pg::binary_hasher_rows(hasher);
  return flock::pg::binary_hasher_finish(hasher);
}

// The SECURITY DEFINER functions flock.snapshot_dataset calls, found once per call site.
struct SnapshotImplementations {
  Implementation store;  // flock._store_snapshot: the general path (a temporary table, then a copy)
  Implementation begin;  // flock._begin_snapshot and _finish_snapshot: the one-copy path
  Implementation finish;
};

void find_definer(const char* name, int nargs, Oid* argtypes, MemoryContext context, Implementation* out) {
  Oid impl = LookupFuncName(list_make2(makeString(pstrdup("flock")), makeString(pstrdup(name))), nargs,
                            argtypes, false);
  HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(impl));
  if (!HeapTupleIsValid(tuple)) elog(ERROR, "cache lookup failed for function %u", impl);
  bool secdef = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple))->prosecdef;
  Oid owner = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple))->proowner;
  ReleaseSysCache(tuple);
  if (!secdef) elog(ERROR, "flock.%s must be SECURITY DEFINER", name);
  fmgr_info_cxt(impl, &out->fn, context);
  out->owner = owner;
}

SnapshotImplementations* snapshot_implementations(FmgrInfo* flinfo) {
  if (flinfo->fn_extra == nullptr) {
    SnapshotImplementations* found = static_cast<SnapshotImplementations*>(
        MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(SnapshotImplementations)));
    Oid store_types[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, REGCLASSOID, TEXTARRAYOID};
    find_definer("_store_snapshot", 6, store_types, flinfo->fn_mcxt, &found->store);
    Oid begin_types[3] = {TEXTOID, REGCLASSOID, TEXTARRAYOID};
    find_definer("_begin_snapshot", 3, begin_types, flinfo->fn_mcxt, &found->begin);
    Oid finish_types[8] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, INT8OID, BYTEAOID};
    find_definer("_finish_snapshot", 8, finish_types, flinfo->fn_mcxt, &found->finish);
    flinfo->fn_extra = found;
  }
  return static_cast<SnapshotImplementations*>(flinfo->fn_extra);
}

// Calls a SECURITY DEFINER implementation with these arguments, acting for `caller`.
Datum call_definer(Oid caller, Implementation* impl, int nargs, const Datum* args, const bool* nulls,
                   bool* isnull) {
  FunctionCallInfo call = static_cast<FunctionCallInfo>(palloc0(SizeForFunctionCallInfo(nargs)));
  InitFunctionCallInfoData(*call, &impl->fn, nargs, InvalidOid, nullptr, nullptr);
  for (int i = 0; i < nargs; ++i) {
    call->args[i].value = args[i];
    call->args[i].isnull = nulls[i];
  }
  Datum result = call_acting_for(caller, impl, call);
  *isnull = call->isnull;
  return result;
}

}  // namespace

// A governance entry point: acts for current_user at the call and runs the implementation
// flock._<name> (SECURITY DEFINER) with the same arguments.
extern "C" Datum flock_entry(PG_FUNCTION_ARGS) {
  Implementation* impl = implementation_of(fcinfo);
  return call_acting_for(effective_caller(), impl, fcinfo);
}

// flock._caller(): the role Flock acts for (current_user when called outside an entry point).
extern "C" Datum flock_caller(PG_FUNCTION_ARGS) {
  Oid role = OidIsValid(acting_for) ? acting_for : GetUserId();
  PG_RETURN_DATUM(DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(role, false))));
}

// flock._may_act_as(role): may current_user act as `role` (superuser, or a member of it)?
extern "C" Datum flock_may_act_as(PG_FUNCTION_ARGS) {
  PG_RETURN_BOOL(may_act_as(get_role_oid(NameStr(*PG_GETARG_NAME(0)), true)));
}

// flock.snapshot_dataset(name, query, description): runs the query as the caller (current_user,
// with its search_path) and stores its rows as the next version of data set `name`, recorded with
// the query, search_path and sources just used, through SECURITY DEFINER functions not executable
// by PUBLIC: only this function reaches them, so recorded provenance is what actually ran.
// One-copy path (the usual one): the query becomes a temporary view of the caller's,
// flock._begin_snapshot creates the empty snapshot table, this function runs SELECT * FROM the view
// as the caller, writing the rows into the table and hashing them (binary definition) in the same
// pass, and flock._finish_snapshot records the version. General path (personal-data marks apply,
// a column the binary hash cannot take, or a client encoding other than UTF8): the query runs into
// a temporary table, and flock._store_snapshot copies it (marks applied) and hashes the copy.
extern "C" Datum flock_snapshot_dataset(PG_FUNCTION_ARGS) {
  // The role the query runs as is the one the snapshot is recorded for.
  Oid caller = GetUserId();
  Datum args[6];
  char nulls[6];
  for (int i = 0; i < 3; ++i) {
    args[i] = PG_GETARG_DATUM(i);
    nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
  }
  // The search_path the query's names are resolved with, taken before anything can change it.
  char* path = GetConfigOptionByName("search_path", nullptr, false);
  SnapshotImplementations* impl = snapshot_implementations(fcinfo->flinfo);

  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  Oid text_arg[2] = {TEXTOID, TEXTOID};
  SPI_execute_with_args("SELECT flock._check_dataset_name($1)", 1, text_arg, args, nulls, false, 0);
  Datum run_args[2] = {args[1], CStringGetTextDatum(path)};
  char run_nulls[2] = {nulls[1], ' '};
  bool isnull;
  Datum ref = 0;
  bool stored = false;

  if (pg_get_client_encoding() == PG_UTF8) {
    if (SPI_execute_with_args("SELECT r.view, r.sources FROM flock._snapshot_view($1, $2) r", 2, text_arg,
                              run_args, run_nulls, false, 0) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "flock._snapshot_view returned no view");
    Oid view = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    bool sources_null;
    Datum sources = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &sources_null);
    char* view_name =
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(view)), get_rel_name(view));
    Datum begin_args[3] = {args[0], ObjectIdGetDatum(view), sources};
    bool begin_nulls[3] = {nulls[0] == 'n', false, sources_null};
    Datum relname = call_definer(caller, &impl->begin, 3, begin_args, begin_nulls, &isnull);
    if (!isnull) {
      Oid relid = get_relname_relid(TextDatumGetCString(relname), get_namespace_oid("flock_data", false));
      if (!OidIsValid(relid)) elog(ERROR, "flock._begin_snapshot created no table");
      int64 rows = 0;
      bytea* chunks = flock::pg::snapshot_write(psprintf("SELECT * FROM %s", view_name), relid, &rows);
      Datum finish_args[8] = {args[0],
                              relname,
                              args[1],
                              CStringGetTextDatum(path),
                              args[2],
                              sources,
                              Int64GetDatum(rows),
                              PointerGetDatum(chunks)};
      bool finish_nulls[8] = {nulls[0] == 'n', false,        nulls[1] == 'n', false,
                              nulls[2] == 'n', sources_null, false,           false};
      ref = call_definer(caller, &impl->finish, 8, finish_args, finish_nulls, &isnull);
      if (isnull) elog(ERROR, "flock._finish_snapshot returned NULL");
      stored = true;
    }
    SPI_execute(psprintf("DROP VIEW %s", view_name), false, 0);
  }

  if (!stored) {
    if (SPI_execute_with_args("SELECT r.tmp, r.sources FROM flock._run_into_temp($1, $2) r", 2, text_arg,
                              run_args, run_nulls, false, 0) != SPI_OK_SELECT ||
        SPI_processed != 1)
      elog(ERROR, "flock._run_into_temp returned no temporary table");
    Oid tmp = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    bool sources_null;
    Datum sources = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &sources_null);
    Datum store_args[6] = {args[0], args[1], CStringGetTextDatum(path), args[2], ObjectIdGetDatum(tmp),
                           sources};
    bool store_nulls[6] = {nulls[0] == 'n', nulls[1] == 'n', false, nulls[2] == 'n', false, sources_null};
    // The store's caller is the role that ran the query: this function's own current_user.
    ref = call_definer(caller, &impl->store, 6, store_args, store_nulls, &isnull);
    if (isnull) elog(ERROR, "flock._store_snapshot returned NULL");
    SPI_execute(psprintf("DROP TABLE %s", quote_qualified_identifier(
                                              get_namespace_name(get_rel_namespace(tmp)), get_rel_name(tmp))),
                false, 0);
  }
  flock::pg::training_capture_cancel_request();
  ref = SPI_datumTransfer(ref, false, -1);
  SPI_finish();
  PG_RETURN_DATUM(ref);
}

// flock._source_hash(name, version): runs the recorded query of data set name@version again, as
// the role that recorded it, and returns the row count, columns and content hash of its result
// (flock._table_hash's definition). Only for roles that may act as that role; the others get 42501
// (verify_dataset_report checks first and says so).
extern "C" Datum flock_source_hash(PG_FUNCTION_ARGS) {
  text* name = PG_GETARG_TEXT_PP(0);
  int32 version = PG_GETARG_INT32(1);
  TupleDesc result_desc;
  if (get_call_result_type(fcinfo, nullptr, &result_desc) != TYPEFUNC_COMPOSITE)
    elog(ERROR, "flock._source_hash must return a record");
  result_desc = BlessTupleDesc(result_desc);
  char* ref = psprintf("%s@%d", text_to_cstring(name), version);

  if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
  // Read as the calling role: row-level security shows it only data sets it may read.
  Oid key_types[2] = {TEXTOID, INT4OID};
  Datum key[2] = {PointerGetDatum(name), Int32GetDatum(version)};
  SPI_execute_with_args(
      "SELECT d.query, d.search_path, d.created_by, d.hash_method FROM flock.datasets d "
      "WHERE d.name OPERATOR(pg_catalog.=) $1 AND d.version OPERATOR(pg_catalog.=) $2",
      2, key_types, key, nullptr, true, 1);
  if (SPI_processed != 1)
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("permission denied for data set \"%s\"", ref),
                    errdetail("Either the data set does not exist or you may not read it; the two cases give the same error.")));
  char* query = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
  char* recorded_path = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
  char* author_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
  const bool binary = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4), "binary") == 0;
  Oid author = get_role_oid(author_name, true);
  if (!may_act_as(author))
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied to run the query of data set \"%s\" as its author \"%s\"", ref, author_name),
                    errdetail("A data set's query runs again only as the role that recorded it, for that role, its members "
                              "and superusers.")));

  char* sql = psprintf("SELECT * FROM (%s\n) AS snapshot", query_body(query));
  char* path = safe_search_path(recorded_path ? recorded_path : "");
  MemoryContext per_batch = AllocSetContextCreate(CurrentMemoryContext, "flock source hash", ALLOCSET_DEFAULT_SIZES);
  TypeCacheEntry* bytea_type = lookup_type_cache(BYTEAOID, TYPECACHE_LT_OPR);
  Tuplesortstate* sorted = tuplesort_begin_datum(BYTEAOID, bytea_type->lt_opr, InvalidOid, false, work_mem, nullptr,
                                                 TUPLESORT_NONE);
  FmgrInfo record_out;
  fmgr_info(F_RECORD_OUT, &record_out);
  TupleDesc row_desc = nullptr;
  int64 rows = 0;
  bytea* chunks = nullptr;

  // As REFRESH MATERIALIZED VIEW does: the author's identity, a security-restricted operation, GUC
  // changes made by its code undone afterwards. Errors restore all of it with the (sub)transaction.
  Oid saved_user;
  int saved_context;
  GetUserIdAndSecContext(&saved_user, &saved_context);
  SetUserIdAndSecContext(author, saved_context | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
  int nest = NewGUCNestLevel();
  set_for_nest_level("search_path", path);
  // The author's code is no Flock implementation: Flock functions it calls act for its own role.
  Oid saved_for = acting_for, saved_as = acting_as;
  acting_for = InvalidOid;
  acting_as = InvalidOid;
  PG_TRY();
  {
    if (binary)
      chunks = run_and_hash_binary(sql, per_batch, &row_desc, &rows);
    else
      run_and_hash(sql, &record_out, sorted, per_batch, &row_desc, &rows);
  }
  PG_FINALLY();
  {
    acting_for = saved_for;
    acting_as = saved_as;
  }
  PG_END_TRY();
  AtEOXact_GUC(false, nest);
  SetUserIdAndSecContext(saved_user, saved_context);

  if (!binary) {
    tuplesort_performsort(sorted);
    chunks = chunk_hashes(sorted, rows);
  }
  tuplesort_end(sorted);

  // Columns and the final hash exactly as flock._table_hash computes them (this function's
  // search_path is pinned to pg_catalog).
  int ncols = row_desc->natts;
  Datum* names = static_cast<Datum*>(palloc(sizeof(Datum) * Max(ncols, 1)));
  Datum* types = static_cast<Datum*>(palloc(sizeof(Datum) * Max(ncols, 1)));
  Datum* typmods = static_cast<Datum*>(palloc(sizeof(Datum) * Max(ncols, 1)));
  int kept = 0;
  for (int i = 0; i < ncols; ++i) {
    Form_pg_attribute att = TupleDescAttr(row_desc, i);
    if (att->attisdropped) continue;
    names[kept] = NameGetDatum(&att->attname);
    types[kept] = ObjectIdGetDatum(att->atttypid);
    typmods[kept] = Int32GetDatum(att->atttypmod);
    ++kept;
  }
  Oid final_types[5] = {NAMEARRAYOID, OIDARRAYOID, INT4ARRAYOID, INT8OID, BYTEAOID};
  Datum final_args[5] = {
      PointerGetDatum(construct_array(names, kept, NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR)),
      PointerGetDatum(construct_array(types, kept, OIDOID, sizeof(Oid), true, TYPALIGN_INT)),
      PointerGetDatum(construct_array(typmods, kept, INT4OID, sizeof(int32), true, TYPALIGN_INT)),
      Int64GetDatum(rows), PointerGetDatum(chunks)};
  if (SPI_execute_with_args(
          "WITH c AS (SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.n, 'type', format_type(a.t, a.m)) "
          "ORDER BY a.i), '[]'::jsonb) AS columns FROM unnest($1, $2, $3) WITH ORDINALITY AS a(n, t, m, i)) "
          "SELECT $4, c.columns, encode(sha256(convert_to(c.columns::text || E'\\n' || $4, 'UTF8') || sha256($5)), 'hex') "
          "FROM c",
          5, final_types, final_args, nullptr, true, 1) != SPI_OK_SELECT ||
      SPI_processed != 1)
    elog(ERROR, "could not compute the content hash");
  Datum values[3];
  bool isnull[3];
  for (int i = 0; i < 3; ++i) values[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull[i]);
  HeapTuple result = heap_form_tuple(result_desc, values, isnull);
  Datum out = SPI_datumTransfer(HeapTupleGetDatum(result), false, -1);
  SPI_finish();
  PG_RETURN_DATUM(out);
}
