// Inference capture: the shared-memory queues, the background worker that stores their records in
// flock.inference_log, and flock.audit_flush / flock.audit_status.
//
// Why a worker: the log must survive the scoring transaction's rollback (that is what an audit
// trail is for), so the backend must not insert in its own transaction. Backends append compact
// binary records (numbers and names, never jsonb) to a byte ring per database; one worker per
// database with pending records drains its ring in transactions of its own, turns consecutive
// records of one statement into one log row with array columns, and exits after a second idle (so
// DROP DATABASE is not held up). The ring's tail moves only after the insert commits: a worker that
// fails mid-way leaves the records for the next one (at least once; a committed batch is never
// re-stored unless the worker dies between commit and moving the tail).
//
// Durability. The queue is shared memory: a crash of any server process makes the postmaster
// reinitialise it, and records still queued are gone. With durability 'sync' (a policy's, or the
// session's flock.audit_durability) the backend notes how far its records reach in the ring, and
// when its top-level statement (or transaction commit) ends it waits until the writer's tail has
// passed them; the writer moves the tail only after its commit is flushed to WAL. Records it could
// not store are counted per backend, so the waiting statement fails instead of returning.
//
// Plain PostgreSQL code: no C++ objects with destructors live in these frames.
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

extern "C" {
PGDLLEXPORT void flock_audit_worker_main(Datum arg);
PG_FUNCTION_INFO_V1(flock_audit_flush);
PG_FUNCTION_INFO_V1(flock_audit_status);
}

namespace flock::pg {

int audit_queue_kb = 4096;
int audit_durability = static_cast<int>(AuditDurability::Async);
int audit_sync_timeout_ms = 60000;

namespace {

constexpr int kSlots = 8;                 // databases with pending records at once
constexpr long kIdleExitMs = 1000;        // an idle worker leaves (DROP DATABASE waits up to 5 s)
constexpr long kStartRetryMs = 10000;     // a requested worker that never showed up is requested again
constexpr int kMaxRowsPerLogRow = 8192;   // consecutive records of a statement merge up to this
constexpr Size kMaxBytesPerTransaction = 16 * 1024 * 1024;

struct AuditSlot {
  Oid dboid;             // InvalidOid: free
  uint64 generation;     // bumped when the slot is freed (flush waits on a slot, not a database)
  int worker_pid;        // 0: no worker
  TimestampTz start_requested;
  Latch* worker_latch;
  uint64 head;           // bytes appended, ever (position = head % size)
  uint64 tail;           // bytes stored and committed
  uint64 records_enqueued;
  uint64 records_stored;
  uint64 rows_stored;
  uint64 records_discarded;
  ConditionVariable cv;  // tail moved or worker gone: writers waiting for room, flushers
  Size data_offset;      // from the start of the shared block
};

// Per PGPROC slot: how many records of the backend there the writer had to discard. A 'sync'
// statement compares it before and after waiting.
struct AuditProcState {
  int pid;
  uint64 discarded;
};

struct AuditShared {
  LWLock* lock;
  Size ring_size;
  int nprocs;
  ConditionVariable slot_freed;
  AuditSlot slots[kSlots];
};

AuditShared* shared = nullptr;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

Size ring_bytes() { return TYPEALIGN(8, static_cast<Size>(audit_queue_kb) * 1024); }
// Every PGPROC (PostgreSQL 15's TotalProcs): backends, auxiliary processes, prepared transactions.
int proc_slots() { return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts; }
Size procs_bytes() { return MAXALIGN(sizeof(AuditProcState) * static_cast<Size>(proc_slots())); }
Size shared_bytes() { return MAXALIGN(sizeof(AuditShared)) + procs_bytes() + kSlots * ring_bytes(); }

char* ring_of(AuditSlot* slot) { return reinterpret_cast<char*>(shared) + slot->data_offset; }
AuditProcState* procs() {
  return reinterpret_cast<AuditProcState*>(reinterpret_cast<char*>(shared) + MAXALIGN(sizeof(AuditShared)));
}

void audit_shmem_request() {
  if (prev_shmem_request_hook) prev_shmem_request_hook();
  RequestAddinShmemSpace(shared_bytes());
  RequestNamedLWLockTranche("flock_audit", 1);
}

void audit_shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found;
  shared = static_cast<AuditShared*>(ShmemInitStruct("flock_audit", shared_bytes(), &found));
  if (!found) {
    memset(shared, 0, sizeof(AuditShared));
    shared->lock = &(GetNamedLWLockTranche("flock_audit"))->lock;
    shared->ring_size = ring_bytes();
    shared->nprocs = proc_slots();
    memset(procs(), 0, procs_bytes());
    ConditionVariableInit(&shared->slot_freed);
    for (int k = 0; k < kSlots; ++k) {
      ConditionVariableInit(&shared->slots[k].cv);
      shared->slots[k].data_offset = MAXALIGN(sizeof(AuditShared)) + procs_bytes() + k * ring_bytes();
    }
  }
  LWLockRelease(AddinShmemInitLock);
}

void ring_write(AuditSlot* slot, uint64 pos, const char* src, Size len) {
  Size size = shared->ring_size;
  Size at = pos % size;
  Size first = Min(len, size - at);
  memcpy(ring_of(slot) + at, src, first);
  if (first < len) memcpy(ring_of(slot), src + first, len - first);
}

void ring_read(AuditSlot* slot, uint64 pos, char* dst, Size len) {
  Size size = shared->ring_size;
  Size at = pos % size;
  Size first = Min(len, size - at);
  memcpy(dst, ring_of(slot) + at, first);
  if (first < len) memcpy(dst + first, ring_of(slot), len - first);
}

// The slot of `db`, claiming a free one if it has none (nullptr: all taken). Lock held exclusively.
AuditSlot* slot_for(Oid db, bool claim) {
  AuditSlot* free_slot = nullptr;
  for (int k = 0; k < kSlots; ++k) {
    AuditSlot* s = &shared->slots[k];
    if (s->dboid == db) return s;
    if (!free_slot && s->dboid == InvalidOid) free_slot = s;
  }
  if (!claim || !free_slot) return nullptr;
  free_slot->dboid = db;
  free_slot->head = free_slot->tail = 0;
  free_slot->worker_pid = 0;
  free_slot->worker_latch = nullptr;
  free_slot->start_requested = 0;
  free_slot->records_enqueued = free_slot->records_stored = free_slot->rows_stored = 0;
  free_slot->records_discarded = 0;
  return free_slot;
}

// Starts the slot's worker unless one runs or was just requested.
void ensure_worker(int idx) {
  AuditSlot* slot = &shared->slots[idx];
  TimestampTz now = GetCurrentTimestamp();
  LWLockAcquire(shared->lock, LW_EXCLUSIVE);
  bool start = slot->dboid != InvalidOid && slot->worker_pid == 0 &&
               (slot->start_requested == 0 ||
                TimestampDifferenceExceeds(slot->start_requested, now, static_cast<int>(kStartRetryMs)));
  Oid db = slot->dboid;
  if (start) slot->start_requested = now;
  LWLockRelease(shared->lock);
  if (!start) return;

  BackgroundWorker w;
  memset(&w, 0, sizeof(w));
  w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
  w.bgw_start_time = BgWorkerStart_RecoveryFinished;
  w.bgw_restart_time = BGW_NEVER_RESTART;  // backends start a new one when records wait
  strlcpy(w.bgw_library_name, "flock", BGW_MAXLEN);
  strlcpy(w.bgw_function_name, "flock_audit_worker_main", BGW_MAXLEN);
  snprintf(w.bgw_name, BGW_MAXLEN, "flock audit writer for database %u", db);
  strlcpy(w.bgw_type, "flock audit writer", BGW_MAXLEN);
  w.bgw_main_arg = Int32GetDatum(idx);
  memcpy(w.bgw_extra, &db, sizeof(Oid));
  w.bgw_notify_pid = 0;
  if (!RegisterDynamicBackgroundWorker(&w, nullptr)) {
    // start_requested stays: the next attempt (and warning) comes kStartRetryMs later.
    ereport(WARNING, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                      errmsg("could not start the flock audit writer; audit records wait in the queue"),
                      errhint("Raise max_worker_processes; predictions wait when the queue is full.")));
  }
}

void require_audit() {
  if (!shared)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("inference capture needs flock in shared_preload_libraries"),
                    errhint("Add flock to shared_preload_libraries in postgresql.conf and restart the server.")));
}

// What this backend's 'sync' records still need: the current top-level statement (or the
// transaction's commit) waits until the writer's tail in `slot` (while it has `generation`) has
// passed `end`.
struct SyncWait {
  bool pending;
  int slot;
  uint64 generation;
  uint64 end;
  uint64 discarded_before;  // this backend's discard count when the first pending record was queued
};
SyncWait sync_wait = {};
uint64 durable_statements = 0;  // statements (and commits) of this session that waited: audit_status
int exec_nesting = 0;           // 0: the executor / utility call that just returned was top-level

ExecutorRun_hook_type prev_executor_run = nullptr;
ExecutorFinish_hook_type prev_executor_finish = nullptr;
ProcessUtility_hook_type prev_process_utility = nullptr;

long ms_since(TimestampTz start) {
  long secs;
  int usecs;
  TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
  return secs * 1000 + usecs / 1000;
}

// Waits until this backend's pending 'sync' records are committed (and flushed) by the writer:
// interruptibly, re-checking at least every 100 ms, at most flock.audit_sync_timeout. Fails when
// the time is up or when the writer had to discard any of them: the statement must not return as
// if they were durable.
void audit_wait_durable() {
  if (!sync_wait.pending || !shared) return;
  // Not inside (sub)transaction abort or with interrupts held: the commit or the next statement
  // waits instead.
  if (!IsTransactionState() || InterruptHoldoffCount > 0 || CritSectionCount > 0) return;
  AuditSlot* slot = &shared->slots[sync_wait.slot];
  int procno = MyProc->pgprocno;
  TimestampTz start = GetCurrentTimestamp();
  uint64 discarded = 0;
  for (;;) {
    LWLockAcquire(shared->lock, LW_SHARED);
    // A slot is freed (new generation) only once its queue is empty: nothing of ours is left in it.
    bool done = slot->generation != sync_wait.generation || slot->tail >= sync_wait.end;
    bool no_worker = slot->worker_pid == 0;
    Latch* latch = slot->worker_latch;
    discarded = procs()[procno].discarded;
    LWLockRelease(shared->lock);
    if (done) break;
    if (no_worker) ensure_worker(sync_wait.slot);
    else if (latch) SetLatch(latch);
    long waited = ms_since(start);
    if (waited >= audit_sync_timeout_ms) {
      ConditionVariableCancelSleep();
      sync_wait.pending = false;
      ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                      errmsg("the audit records of this statement were not stored within flock.audit_sync_timeout (%d ms)",
                             audit_sync_timeout_ms),
                      errdetail("Their model's audit durability (or flock.audit_durability) is 'sync': a statement "
                                "returns only once its records are committed; they stay queued."),
                      errhint("See flock.audit_status() and the server log for the flock audit writer; is a lock on "
                              "flock.inference_log held, or max_worker_processes exhausted?")));
    }
    // Woken by the writer's broadcast when the tail moves; the timeout bounds each sleep.
    ConditionVariableTimedSleep(&slot->cv, Min(100L, static_cast<long>(audit_sync_timeout_ms) - waited),
                                PG_WAIT_EXTENSION);
  }
  ConditionVariableCancelSleep();
  sync_wait.pending = false;
  durable_statements++;
  if (discarded != sync_wait.discarded_before)
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("%llu audit records of this statement could not be stored in flock.inference_log",
                           static_cast<unsigned long long>(discarded - sync_wait.discarded_before)),
                    errdetail("Their model's audit durability (or flock.audit_durability) is 'sync'; the flock audit "
                              "writer discarded them."),
                    errhint("The server log has the flock audit writer's WARNING with the reason.")));
}

// The executor and utility hooks: a top-level statement that queued 'sync' records waits when it
// ends. Nested calls (functions' statements) do not: the statement that the client sent does.
// ExecutorRun, not ExecutorEnd: a cursor's FETCH returns after ExecutorRun, and ExecutorEnd also
// runs during abort, where no waiting is possible.
void audit_executor_run(QueryDesc* qd, ScanDirection direction, uint64 count, bool execute_once) {
  exec_nesting++;
  PG_TRY();
  {
    if (prev_executor_run) prev_executor_run(qd, direction, count, execute_once);
    else standard_ExecutorRun(qd, direction, count, execute_once);
  }
  PG_FINALLY();
  { exec_nesting--; }
  PG_END_TRY();
  if (exec_nesting == 0) audit_wait_durable();
}

void audit_executor_finish(QueryDesc* qd) {  // AFTER triggers
  exec_nesting++;
  PG_TRY();
  {
    if (prev_executor_finish) prev_executor_finish(qd);
    else standard_ExecutorFinish(qd);
  }
  PG_FINALLY();
  { exec_nesting--; }
  PG_END_TRY();
  if (exec_nesting == 0) audit_wait_durable();
}

void audit_process_utility(PlannedStmt* pstmt, const char* query, bool read_only_tree, ProcessUtilityContext context,
                           ParamListInfo params, QueryEnvironment* env, DestReceiver* dest, QueryCompletion* qc) {
  exec_nesting++;
  PG_TRY();
  {
    if (prev_process_utility) prev_process_utility(pstmt, query, read_only_tree, context, params, env, dest, qc);
    else standard_ProcessUtility(pstmt, query, read_only_tree, context, params, env, dest, qc);
  }
  PG_FINALLY();
  { exec_nesting--; }
  PG_END_TRY();
  if (exec_nesting == 0) audit_wait_durable();  // CALL, DO, FETCH, EXECUTE ...
}

// Commit waits too (records queued outside any statement hook, e.g. fast-path calls); an aborted
// transaction forgets its wait: its statement did not return successfully.
void audit_xact_callback(XactEvent event, void*) {
  switch (event) {
    case XACT_EVENT_PRE_COMMIT:
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
    case XACT_EVENT_PRE_PREPARE:
      audit_wait_durable();
      break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
      sync_wait.pending = false;
      break;
    default:
      break;
  }
}

}  // namespace

bool audit_available() { return shared != nullptr; }

Size audit_max_record() { return shared ? shared->ring_size / 4 : 0; }

void audit_enqueue(const AuditRecord* rec) {
  require_audit();
  // No writer runs during recovery: refuse rather than queue records that could not be stored.
  if (RecoveryInProgress())
    ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
                    errmsg("predictions of an audited model cannot be recorded during recovery"),
                    errhint("Score audited models on the primary, or set their policy to 'off' with flock.set_audit.")));
  Size len = rec->total_len;
  if (len > audit_max_record())
    ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                    errmsg("one audited prediction needs %zu bytes, more than the audit queue takes (%zu)", len,
                           audit_max_record()),
                    errhint("Raise flock.audit_queue_size (needs a restart).")));
  // The policy's durability, or the session's when it asks for more (never less).
  AuditRecord hdr = *rec;
  if (audit_durability == static_cast<int>(AuditDurability::Sync)) hdr.flags |= kAuditSync;
  bool sync = (hdr.flags & kAuditSync) != 0;
  hdr.enqueuer_procno = MyProc->pgprocno;
  hdr.enqueuer_pid = MyProcPid;
  bool sleeping = false;
  for (;;) {
    LWLockAcquire(shared->lock, LW_EXCLUSIVE);
    AuditSlot* slot = slot_for(MyDatabaseId, true);
    if (slot && shared->ring_size - (slot->head - slot->tail) >= len) {
      ring_write(slot, slot->head, reinterpret_cast<const char*>(&hdr), sizeof(hdr));
      ring_write(slot, slot->head + sizeof(hdr), reinterpret_cast<const char*>(rec) + sizeof(hdr), len - sizeof(hdr));
      slot->head += len;
      slot->records_enqueued++;
      int idx = static_cast<int>(slot - shared->slots);
      if (sync) {
        AuditProcState* me = &procs()[MyProc->pgprocno];
        if (me->pid != MyProcPid) {  // first 'sync' record of this process in its PGPROC slot
          me->pid = MyProcPid;
          me->discarded = 0;
        }
        if (!sync_wait.pending) sync_wait.discarded_before = me->discarded;
        sync_wait.pending = true;
        sync_wait.slot = idx;
        sync_wait.generation = slot->generation;
        sync_wait.end = slot->head;
      }
      bool need_worker = slot->worker_pid == 0;
      Latch* latch = slot->worker_latch;
      LWLockRelease(shared->lock);
      if (sleeping) ConditionVariableCancelSleep();
      if (need_worker) ensure_worker(idx);
      else if (latch) SetLatch(latch);
      return;
    }
    // Full (or no free slot): wait for the worker; never drop the record.
    int idx = slot ? static_cast<int>(slot - shared->slots) : -1;
    ConditionVariable* cv = slot ? &slot->cv : &shared->slot_freed;
    Latch* latch = slot ? slot->worker_latch : nullptr;
    LWLockRelease(shared->lock);
    if (idx >= 0) ensure_worker(idx);
    if (latch) SetLatch(latch);
    sleeping = true;
    ConditionVariableTimedSleep(cv, 100, PG_WAIT_EXTENSION);
  }
}

void install_audit() {
  static const struct config_enum_entry durability_options[] = {
      {"async", static_cast<int>(AuditDurability::Async), false},
      {"sync", static_cast<int>(AuditDurability::Sync), false},
      {nullptr, 0, false}};
  // Any role may ask for more durability for its own statements; a policy's 'sync' stays 'sync'
  // whatever this says (the two combine with OR).
  DefineCustomEnumVariable("flock.audit_durability",
                           "When a statement's audit records must be durable: 'async' or 'sync'.",
                           "'sync': a statement that scored audited predictions returns only once the audit writer has "
                           "committed their records (flushed to WAL). It cannot weaken a model policy's 'sync'.",
                           &audit_durability, static_cast<int>(AuditDurability::Async), durability_options,
                           PGC_USERSET, 0, nullptr, nullptr, nullptr);
  DefineCustomIntVariable("flock.audit_sync_timeout",
                          "Longest a statement with 'sync' audit records waits for the audit writer.",
                          "Past it the statement fails (55000): its records could not be made durable in time.",
                          &audit_sync_timeout_ms, 60000, 1, INT_MAX, PGC_USERSET, GUC_UNIT_MS, nullptr, nullptr,
                          nullptr);
  // Loaded later than server start (not preloaded), there is no queue; and PostgreSQL forbids
  // (FATAL) creating a PGC_POSTMASTER setting then.
  if (!process_shared_preload_libraries_in_progress) return;
  DefineCustomIntVariable("flock.audit_queue_size",
                          "Shared memory per database for audit records waiting to be stored.",
                          "Predictions of audited models wait when it is full. Needs a restart.", &audit_queue_kb,
                          4096, 256, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr, nullptr);
  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = audit_shmem_request;
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = audit_shmem_startup;
  prev_executor_run = ExecutorRun_hook;
  ExecutorRun_hook = audit_executor_run;
  prev_executor_finish = ExecutorFinish_hook;
  ExecutorFinish_hook = audit_executor_finish;
  prev_process_utility = ProcessUtility_hook;
  ProcessUtility_hook = audit_process_utility;
  RegisterXactCallback(audit_xact_callback, nullptr);
}

// ------------------------------------------------------------------------------------------------
// The worker
// ------------------------------------------------------------------------------------------------

namespace {

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

const char* kFunctions[] = {"predict", "predict_proba", "predict_label", "predict_tensor"};

// Inserts one log row for records recs[0..n) (a batch of one statement).
void store_batch(const AuditRecord* const* recs, int n) {
  const AuditRecord* first = recs[0];
  int nfeat = first->nfeat;
  int width = first->out_width;
  bool label = first->want == 2;
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
  Datum values[13];
  char nulls[13];
  memset(nulls, ' ', sizeof(nulls));
  values[0] = TimestampTzGetDatum(first->logged_at);
  values[1] = DirectFunctionCall1(namein, CStringGetDatum(first->role));
  values[2] = CStringGetTextDatum(first->model_name);
  values[3] = Int32GetDatum(first->model_version);
  values[4] = Int64GetDatum(first->query_id);
  if (first->query_id == 0) nulls[4] = 'n';
  values[5] = CStringGetTextDatum(kFunctions[first->want]);
  values[6] = Int32GetDatum(rows);
  if (first->names_len > 0) {
    Datum* names = static_cast<Datum*>(palloc(sizeof(Datum) * Max(nfeat, 1)));
    const char* p = reinterpret_cast<const char*>(first) + l0.names;
    for (int f = 0; f < nfeat; ++f) {
      names[f] = CStringGetTextDatum(p);
      p += strlen(p) + 1;
    }
    values[7] = PointerGetDatum(construct_array(names, nfeat, TEXTOID, -1, false, TYPALIGN_INT));
  } else {
    nulls[7] = 'n';
  }
  nulls[8] = nulls[12] = 'n';
  if (any_num && nfeat > 0 && real) {
    values[12] = PointerGetDatum(construct_md_array(num, num_null, 2, dims, lbs, FLOAT4OID, sizeof(float4), true,
                                                    TYPALIGN_INT));
    nulls[12] = ' ';
  } else if (any_num && nfeat > 0) {
    values[8] = PointerGetDatum(construct_md_array(num, num_null, 2, dims, lbs, FLOAT8OID, sizeof(float8),
                                                   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    nulls[8] = ' ';
  }
  if (any_text && nfeat > 0)
    values[9] = PointerGetDatum(construct_md_array(txt, txt_null, 2, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
  else
    nulls[9] = 'n';
  if (label) {
    nulls[10] = 'n';
    values[11] = PointerGetDatum(construct_array(out, rows, TEXTOID, -1, false, TYPALIGN_INT));
  } else {
    int odims[2] = {rows, width};
    values[10] = width > 0 ? PointerGetDatum(construct_md_array(out, nullptr, 2, odims, lbs, FLOAT8OID, sizeof(float8),
                                                                FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))
                           : PointerGetDatum(construct_empty_array(FLOAT8OID));
    nulls[11] = 'n';
  }
  if (!insert_plan) {
    Oid types[13] = {TIMESTAMPTZOID, NAMEOID, TEXTOID, INT4OID, INT8OID, TEXTOID, INT4OID, TEXTARRAYOID,
                     FLOAT8ARRAYOID, TEXTARRAYOID, FLOAT8ARRAYOID, TEXTARRAYOID, FLOAT4ARRAYOID};
    SPIPlanPtr plan = SPI_prepare(
        "INSERT INTO flock.inference_log (logged_at, role, model_name, model_version, query_id, function, n_rows, "
        "features, input, input_text, output, output_label, input_real) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        13, types);
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
    long waited = 0;
    {
      long secs;
      int usecs;
      TimestampDifference(start, GetCurrentTimestamp(), &secs, &usecs);
      waited = secs * 1000 + usecs / 1000;
    }
    if (waited >= timeout_ms) break;
    ConditionVariableTimedSleep(&slot->cv, Min(100L, static_cast<long>(timeout_ms) - waited + 1), PG_WAIT_EXTENSION);
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
