// Inference capture, the writer: one background worker per database with pending records drains
// its ring (audit_queue.cpp) into flock.inference_log in transactions of its own; and the SQL
// functions flock.audit_flush / flock.audit_status. See audit_queue.cpp for the protocol.
#include "pg.hpp"  // must come first

extern "C" {
#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "executor/executor.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/backend_status.h"
#include "utils/datetime.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
}
#undef flock

#include <csignal>

#include "audit.hpp"
#include "audit_shared.hpp"
#include "flock/want.hpp"

extern "C" {
PGDLLEXPORT void flock_audit_worker_main(Datum arg);
PG_FUNCTION_INFO_V1(flock_audit_flush);
PG_FUNCTION_INFO_V1(flock_audit_status);
}

namespace flock::pg {

namespace {

// The columns of flock.inference_log the writer fills: the insert's parameters ($1 is kLogLoggedAt), in
// the order of store_batch's INSERT.
enum LogColumn : int {
  kLogLoggedAt,
  kLogRole,
  kLogModelName,
  kLogModelVersion,
  kLogQueryId,
  kLogFunction,
  kLogNRows,
  kLogFeatures,
  kLogInput,  // float8 inputs
  kLogInputText,
  kLogOutput,  // numbers (every function but predict_label)
  kLogOutputLabel,
  kLogInputReal,  // float4 inputs, stored as the model took them
  kLogInsertColumns
};

volatile sig_atomic_t got_sigterm = false;
SPIPlanPtr insert_plan = nullptr;

void worker_sigterm(SIGNAL_ARGS) {
  int save_errno = errno;
  got_sigterm = true;
  SetLatch(MyLatch);
  errno = save_errno;
}

// Leaves the slot: no worker now; waiters re-check (and start another if records remain).
void worker_detach(int, Datum arg) {
  AuditSlot* slot = &shared->slots[DatumGetInt32(arg)];
  LWLockAcquire(shared->lock, LW_EXCLUSIVE);
  if (slot->worker_pid == MyProcPid) {
    slot->worker_pid = 0;
    slot->worker_latch = nullptr;
  }
  LWLockRelease(shared->lock);
  ConditionVariableBroadcast(&slot->cv);
}

const AuditRecord* rec_at(char* buf, Size off) { return reinterpret_cast<const AuditRecord*>(buf + off); }

// Records that go into one log row: same statement, role, model version, function and features.
bool same_batch(const AuditRecord* a, const AuditRecord* b) {
  if (a->logged_at != b->logged_at || a->query_id != b->query_id || a->model_version != b->model_version ||
      a->want != b->want || a->flags != b->flags || a->nfeat != b->nfeat || a->out_width != b->out_width || a->names_len != b->names_len ||
      strcmp(a->role, b->role) != 0 || strcmp(a->model_name, b->model_name) != 0)
    return false;
  AuditLayout la = audit_layout(a->nrows, a->nfeat, a->out_width, a->names_len, a->text_len);
  AuditLayout lb = audit_layout(b->nrows, b->nfeat, b->out_width, b->names_len, b->text_len);
  const char* pa = reinterpret_cast<const char*>(a);
  const char* pb = reinterpret_cast<const char*>(b);
  return memcmp(pa + la.feat_is_text, pb + lb.feat_is_text, a->nfeat) == 0 &&
         memcmp(pa + la.names, pb + lb.names, a->names_len) == 0;
}

// Inserts one log row for records recs[0..n) (a batch of one statement).
void store_batch(const AuditRecord* const* recs, int n) {
  const AuditRecord* first = recs[0];
  int nfeat = first->nfeat;
  int width = first->out_width;
  const Want want = static_cast<Want>(first->want);
  bool label = want == Want::Label;
  int rows = 0;
  for (int k = 0; k < n; ++k) rows += recs[k]->nrows;
  AuditLayout l0 = audit_layout(first->nrows, nfeat, width, first->names_len, first->text_len);
  const uint8* is_text = reinterpret_cast<const uint8*>(first) + l0.feat_is_text;
  bool real = (first->flags & kAuditInputFloat4) != 0;
  bool any_text = false, any_num = false;
  for (int f = 0; f < nfeat; ++f) (is_text[f] ? any_text : any_num) = true;

  Size cells = static_cast<Size>(rows) * nfeat;
  Datum* num = any_num ? static_cast<Datum*>(palloc(sizeof(Datum) * Max(cells, 1))) : nullptr;
  bool* num_null = any_num ? static_cast<bool*>(palloc(sizeof(bool) * Max(cells, 1))) : nullptr;
  Datum* txt = any_text ? static_cast<Datum*>(palloc(sizeof(Datum) * Max(cells, 1))) : nullptr;
  bool* txt_null = any_text ? static_cast<bool*>(palloc(sizeof(bool) * Max(cells, 1))) : nullptr;
  Size outs = static_cast<Size>(rows) * (label ? 1 : width);
  Datum* out = static_cast<Datum*>(palloc(sizeof(Datum) * Max(outs, 1)));

  Size cell = 0, o = 0;
  for (int k = 0; k < n; ++k) {
    const AuditRecord* r = recs[k];
    const char* base = reinterpret_cast<const char*>(r);
    AuditLayout l = audit_layout(r->nrows, nfeat, width, r->names_len, r->text_len);
    const double* in = reinterpret_cast<const double*>(base + l.inputs);
    const double* ov = reinterpret_cast<const double*>(base + l.outputs);
    const uint8* nulls = reinterpret_cast<const uint8*>(base + l.input_null);
    const char* text = base + l.text;
    for (int i = 0; i < r->nrows; ++i) {
      for (int f = 0; f < nfeat; ++f, ++cell) {
        Size c = static_cast<Size>(i) * nfeat + f;
        bool isnull = nulls[c] != 0;
        if (any_num) {
          num_null[cell] = isnull || is_text[f];
          num[cell] = num_null[cell] ? (Datum)0
                      : real ? Float4GetDatum(static_cast<float4>(in[c]))
                             : Float8GetDatum(in[c]);
        }
        if (any_text) {
          txt_null[cell] = isnull || !is_text[f];
          txt[cell] = (Datum)0;
          if (is_text[f] && !isnull) {
            txt[cell] = CStringGetTextDatum(text);
            text += strlen(text) + 1;
          }
        }
      }
    }
    if (label) {
      for (int i = 0; i < r->nrows; ++i) {
        out[o++] = CStringGetTextDatum(text);
        text += strlen(text) + 1;
      }
    } else {
      for (Size j = 0; j < static_cast<Size>(r->nrows) * width; ++j) out[o++] = Float8GetDatum(ov[j]);
    }
  }

  int dims[2] = {rows, nfeat};
  int lbs[2] = {1, 1};
  Datum values[kLogInsertColumns];
  char nulls[kLogInsertColumns];
  memset(nulls, ' ', sizeof(nulls));
  values[kLogLoggedAt] = TimestampTzGetDatum(first->logged_at);
  values[kLogRole] = DirectFunctionCall1(namein, CStringGetDatum(first->role));
  values[kLogModelName] = CStringGetTextDatum(first->model_name);
  values[kLogModelVersion] = Int32GetDatum(first->model_version);
  values[kLogQueryId] = Int64GetDatum(first->query_id);
  if (first->query_id == 0) nulls[kLogQueryId] = 'n';
  values[kLogFunction] = CStringGetTextDatum(function_name(want));
  values[kLogNRows] = Int32GetDatum(rows);
  if (first->names_len > 0) {
    Datum* names = static_cast<Datum*>(palloc(sizeof(Datum) * Max(nfeat, 1)));
    const char* p = reinterpret_cast<const char*>(first) + l0.names;
    for (int f = 0; f < nfeat; ++f) {
      names[f] = CStringGetTextDatum(p);
      p += strlen(p) + 1;
    }
    values[kLogFeatures] = PointerGetDatum(construct_array(names, nfeat, TEXTOID, -1, false, TYPALIGN_INT));
  } else {
    nulls[kLogFeatures] = 'n';
  }
  nulls[kLogInput] = nulls[kLogInputReal] = 'n';
  if (any_num && nfeat > 0 && real) {
    values[kLogInputReal] = PointerGetDatum(
        construct_md_array(num, num_null, 2, dims, lbs, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT));
    nulls[kLogInputReal] = ' ';
  } else if (any_num && nfeat > 0) {
    values[kLogInput] = PointerGetDatum(construct_md_array(num, num_null, 2, dims, lbs, FLOAT8OID,
                                                           sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    nulls[kLogInput] = ' ';
  }
  if (any_text && nfeat > 0)
    values[kLogInputText] =
        PointerGetDatum(construct_md_array(txt, txt_null, 2, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
  else
    nulls[kLogInputText] = 'n';
  if (label) {
    nulls[kLogOutput] = 'n';
    values[kLogOutputLabel] = PointerGetDatum(construct_array(out, rows, TEXTOID, -1, false, TYPALIGN_INT));
  } else {
    int odims[2] = {rows, width};
    values[kLogOutput] =
        width > 0 ? PointerGetDatum(construct_md_array(out, nullptr, 2, odims, lbs, FLOAT8OID, sizeof(float8),
                                                       FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))
                  : PointerGetDatum(construct_empty_array(FLOAT8OID));
    nulls[kLogOutputLabel] = 'n';
  }
  if (!insert_plan) {
    Oid types[kLogInsertColumns] = {TIMESTAMPTZOID, NAMEOID, TEXTOID, INT4OID, INT8OID, TEXTOID, INT4OID, TEXTARRAYOID,
                     FLOAT8ARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, FLOAT4ARRAYOID};
    SPIPlanPtr plan = SPI_prepare(
        "INSERT INTO flock.inference_log (logged_at, role, model_name, model_version, query_id, function, n_rows, "
        "features, input, input_text, output, output_label, input_real) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        kLogInsertColumns, types);
    if (!plan) elog(ERROR, "flock audit: could not prepare the log insert: %s", SPI_result_code_string(SPI_result));
    SPI_keepplan(plan);
    insert_plan = plan;
  }
  int rc = SPI_execute_plan(insert_plan, values, nulls, false, 0);
  if (rc != SPI_OK_INSERT) elog(ERROR, "flock audit: log insert failed: %s", SPI_result_code_string(rc));
}

// Stores recs[0..count) in one transaction of the writer's own; on failure returns false with the
// error in *err (allocated in `cxt`). When any record is 'sync' the commit is flushed to WAL before
// this returns, whatever synchronous_commit says: the tail moves past them only after that.
bool store_records(const AuditRecord* const* recs, int count, MemoryContext cxt, ErrorData** err) {
  volatile bool any_sync = false;
  for (int k = 0; k < count; ++k)
    if (recs[k]->flags & kAuditSync) any_sync = true;
  volatile bool ok = true;
  PG_TRY();
  {
    SetCurrentStatementStartTimestamp();
    StartTransactionCommand();
    if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "flock audit: SPI_connect failed");
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_activity(STATE_RUNNING, "flock audit: storing inference records");
    for (int k = 0; k < count;) {
      int end = k + 1, batch_rows = recs[k]->nrows;
      while (end < count && batch_rows + recs[end]->nrows <= kMaxRowsPerLogRow && same_batch(recs[k], recs[end]))
        batch_rows += recs[end++]->nrows;
      store_batch(recs + k, end - k);
      k = end;
    }
    SPI_finish();
    PopActiveSnapshot();
    CommitTransactionCommand();
    if (any_sync) XLogFlush(XactLastCommitEnd);
  }
  PG_CATCH();
  {
    MemoryContextSwitchTo(cxt);
    if (*err) FreeErrorData(*err);
    *err = CopyErrorData();
    FlushErrorState();
    AbortCurrentTransaction();
    insert_plan = nullptr;  // its memory may be gone with a dropped extension; prepare again
    ok = false;
  }
  PG_END_TRY();
  return ok;
}

// Stores the records in [from, to) of the slot's ring, in one transaction; returns the position
// reached (it may stop early to keep transactions bounded). If that transaction fails, each record
// is tried alone, so that one record that cannot be stored does not take the others with it; only
// those that fail alone are discarded (counted per enqueuing backend: a 'sync' statement waiting
// for them fails instead of returning).
uint64 store_range(AuditSlot* slot, uint64 from, uint64 to, uint64* nrec, uint64* nrows) {
  Size want = Min(static_cast<Size>(to - from), kMaxBytesPerTransaction);
  // Whole records only.
  MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "flock audit batch", ALLOCSET_DEFAULT_SIZES);
  MemoryContext old = MemoryContextSwitchTo(cxt);
  char* buf = static_cast<char*>(palloc(Max(want, sizeof(AuditRecord))));
  Size got = 0;
  int count = 0;
  while (from + got < to) {
    AuditRecord hdr;
    ring_read(slot, from + got, reinterpret_cast<char*>(&hdr), sizeof(hdr));
    if (got > 0 && got + hdr.total_len > want) break;
    if (got + hdr.total_len > want) {  // one record bigger than the buffer (cannot happen; be safe)
      buf = static_cast<char*>(repalloc(buf, got + hdr.total_len));
      want = got + hdr.total_len;
    }
    ring_read(slot, from + got, buf + got, hdr.total_len);
    got += hdr.total_len;
    count++;
  }
  const AuditRecord** recs = static_cast<const AuditRecord**>(palloc(sizeof(AuditRecord*) * Max(count, 1)));
  Size off = 0;
  for (int k = 0; k < count; ++k) {
    recs[k] = rec_at(buf, off);
    off += recs[k]->total_len;
  }
  MemoryContextSwitchTo(old);

  ErrorData* err = nullptr;
  int stored = 0, lost = 0;
  uint64 rows = 0, lost_rows = 0;
  if (store_records(recs, count, cxt, &err)) {
    stored = count;
    for (int k = 0; k < count; ++k) rows += recs[k]->nrows;
  } else {
    for (int k = 0; k < count; ++k) {
      if (count > 1 && store_records(recs + k, 1, cxt, &err)) {
        stored++;
        rows += recs[k]->nrows;
        continue;
      }
      lost++;
      lost_rows += recs[k]->nrows;
      LWLockAcquire(shared->lock, LW_EXCLUSIVE);
      int procno = recs[k]->enqueuer_procno;
      if ((recs[k]->flags & kAuditSync) && procno >= 0 && procno < shared->nprocs &&
          procs()[procno].pid == recs[k]->enqueuer_pid)
        procs()[procno].discarded++;
      slot->records_discarded++;
      LWLockRelease(shared->lock);
    }
  }
  pgstat_report_activity(STATE_IDLE, nullptr);
  if (lost > 0) {
    // Not silent: the server log says what was lost and why, and audit_status counts it.
    ereport(WARNING, (errcode(err->sqlerrcode),
                      errmsg("flock audit: could not store %d inference records (%llu predictions); they are discarded",
                             lost, static_cast<unsigned long long>(lost_rows)),
                      errdetail("%s", err->message)));
  }
  *nrec = stored;
  *nrows = rows;
  MemoryContextDelete(cxt);
  return from + got;
}

}  // namespace
}  // namespace flock::pg

using namespace flock::pg;

void flock_audit_worker_main(Datum arg) {
  int idx = DatumGetInt32(arg);
  Oid db;
  memcpy(&db, MyBgworkerEntry->bgw_extra, sizeof(Oid));
  pqsignal(SIGTERM, worker_sigterm);
  pqsignal(SIGHUP, SignalHandlerForConfigReload);
  BackgroundWorkerUnblockSignals();
  if (!shared) proc_exit(0);
  AuditSlot* slot = &shared->slots[idx];

  LWLockAcquire(shared->lock, LW_EXCLUSIVE);
  bool mine = slot->dboid == db && slot->worker_pid == 0;
  if (mine) {
    slot->worker_pid = MyProcPid;
    slot->worker_latch = MyLatch;
    slot->start_requested = 0;
  }
  LWLockRelease(shared->lock);
  if (!mine) proc_exit(0);  // another worker has it, or the slot moved on
  before_shmem_exit(worker_detach, Int32GetDatum(idx));
  // The bootstrap superuser: the log grants INSERT to nobody else.
  BackgroundWorkerInitializeConnectionByOid(db, InvalidOid, 0);
  // Settings of the server, database or role that would make an insert fail (and the records be
  // discarded) rather than wait: the writer's transactions are never read-only nor timed out.
  SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
  SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
  SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
  SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

  TimestampTz idle_since = GetCurrentTimestamp();
  for (;;) {
    LWLockAcquire(shared->lock, LW_SHARED);
    uint64 head = slot->head, tail = slot->tail;
    LWLockRelease(shared->lock);
    if (head != tail) {
      uint64 nrec = 0, nrows = 0;
      uint64 reached = store_range(slot, tail, head, &nrec, &nrows);
      LWLockAcquire(shared->lock, LW_EXCLUSIVE);
      slot->tail = reached;
      slot->records_stored += nrec;
      slot->rows_stored += nrows;
      LWLockRelease(shared->lock);
      ConditionVariableBroadcast(&slot->cv);
      idle_since = GetCurrentTimestamp();
      continue;
    }
    // Stopping (SIGTERM, also at server shutdown) or idle: leave once the queue is empty, and say
    // so under the lock that checked it, so a record enqueued after that starts a new writer.
    if (got_sigterm || TimestampDifferenceExceeds(idle_since, GetCurrentTimestamp(), static_cast<int>(kIdleExitMs))) {
      LWLockAcquire(shared->lock, LW_EXCLUSIVE);
      bool empty = slot->head == slot->tail;
      if (empty) {  // free the slot for any database
        slot->dboid = InvalidOid;
        slot->generation++;
        slot->worker_pid = 0;
        slot->worker_latch = nullptr;
      }
      LWLockRelease(shared->lock);
      if (empty) {
        ConditionVariableBroadcast(&slot->cv);
        ConditionVariableBroadcast(&shared->slot_freed);
        break;
      }
      continue;
    }
    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 200, PG_WAIT_EXTENSION);
    ResetLatch(MyLatch);
    if (ConfigReloadPending) {
      ConfigReloadPending = false;
      ProcessConfigFile(PGC_SIGHUP);
    }
  }
  proc_exit(0);
}

// flock.audit_flush(timeout interval): waits until every record this database's sessions enqueued
// before the call is stored and committed; false when the timeout passed first.
Datum flock_audit_flush(PG_FUNCTION_ARGS) {
  Interval* iv = PG_ARGISNULL(0) ? nullptr : PG_GETARG_INTERVAL_P(0);
  double timeout_ms = 30000;
  if (iv) {
    timeout_ms = (static_cast<double>(iv->time) + (static_cast<double>(iv->day) + iv->month * 30.0) * USECS_PER_DAY) / 1000.0;
    if (timeout_ms < 0)
      ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("audit_flush timeout must not be negative"),
                      errhint("Pass how long to wait, e.g. flock.audit_flush('10 seconds').")));
  }
  require_audit();
  LWLockAcquire(shared->lock, LW_SHARED);
  AuditSlot* slot = slot_for(MyDatabaseId, false);
  uint64 target = slot ? slot->head : 0;
  uint64 generation = slot ? slot->generation : 0;
  LWLockRelease(shared->lock);
  if (!slot) PG_RETURN_BOOL(true);
  int idx = static_cast<int>(slot - shared->slots);
  TimestampTz start = GetCurrentTimestamp();
  bool done = false;
  for (;;) {
    LWLockAcquire(shared->lock, LW_SHARED);
    done = slot->generation != generation || slot->tail >= target;
    bool no_worker = slot->worker_pid == 0;
    Latch* latch = slot->worker_latch;
    LWLockRelease(shared->lock);
    if (done) break;
    if (no_worker) ensure_worker(idx);
    else if (latch) SetLatch(latch);
    long waited = ms_since(start);
    if (waited >= timeout_ms) break;
    ConditionVariableTimedSleep(&slot->cv, Min(kWaitRecheckMs, static_cast<long>(timeout_ms) - waited + 1),
                                PG_WAIT_EXTENSION);
  }
  ConditionVariableCancelSleep();
  PG_RETURN_BOOL(done);
}

// flock.audit_status(): this database's queue and writer, as jsonb.
Datum flock_audit_status(PG_FUNCTION_ARGS) {
  if (!shared) {
    PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum("{\"available\": false}")));
  }
  LWLockAcquire(shared->lock, LW_SHARED);
  AuditSlot* slot = slot_for(MyDatabaseId, false);
  char* json;
  if (!slot) {
    json = psprintf("{\"available\": true, \"queue_bytes\": %zu, \"pending_bytes\": 0, \"worker_pid\": null, "
                    "\"durable_statements\": %llu}",
                    shared->ring_size, static_cast<unsigned long long>(durable_statements));
  } else {
    json = psprintf(
        "{\"available\": true, \"queue_bytes\": %zu, \"pending_bytes\": %llu, \"worker_pid\": %s, "
        "\"records_enqueued\": %llu, \"records_stored\": %llu, \"rows_stored\": %llu, \"records_discarded\": %llu, "
        "\"durable_statements\": %llu}",
        shared->ring_size, static_cast<unsigned long long>(slot->head - slot->tail),
        slot->worker_pid ? psprintf("%d", slot->worker_pid) : "null",
        static_cast<unsigned long long>(slot->records_enqueued), static_cast<unsigned long long>(slot->records_stored),
        static_cast<unsigned long long>(slot->rows_stored), static_cast<unsigned long long>(slot->records_discarded),
        static_cast<unsigned long long>(durable_statements));
  }
  LWLockRelease(shared->lock);
  PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}