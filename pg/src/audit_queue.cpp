// Inference capture, the queue: shared memory, audit_enqueue and the 'sync' waits. The writer that
// drains it is audit_writer.cpp; what both share is audit_shared.hpp.
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
#include "audit_shared.hpp"

namespace flock::pg {

constexpr int kDefaultAuditQueueKb = 4096;
constexpr int kDefaultAuditSyncTimeoutMs = 60000;
int audit_queue_kb = kDefaultAuditQueueKb;
int audit_durability = static_cast<int>(AuditDurability::Async);
int audit_sync_timeout_ms = kDefaultAuditSyncTimeoutMs;

AuditShared* shared = nullptr;


shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

Size ring_bytes() { return TYPEALIGN(kAuditRecordAlign, static_cast<Size>(audit_queue_kb) * 1024); }
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
// interruptibly, re-checking at least every kWaitRecheckMs, at most flock.audit_sync_timeout. Fails when
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
    ConditionVariableTimedSleep(
        &slot->cv, Min(kWaitRecheckMs, static_cast<long>(audit_sync_timeout_ms) - waited), PG_WAIT_EXTENSION);
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
  DefineCustomIntVariable(
      "flock.audit_sync_timeout", "Longest a statement with 'sync' audit records waits for the audit writer.",
      "Past it the statement fails (55000): its records could not be made durable in time.",
      &audit_sync_timeout_ms, kDefaultAuditSyncTimeoutMs, 1, INT_MAX, PGC_USERSET, GUC_UNIT_MS, nullptr,
      nullptr, nullptr);
  // Loaded later than server start (not preloaded), there is no queue; and PostgreSQL forbids
  // (FATAL) creating a PGC_POSTMASTER setting then.
  if (!process_shared_preload_libraries_in_progress) return;
  DefineCustomIntVariable(
      "flock.audit_queue_size", "Shared memory per database for audit records waiting to be stored.",
      "Predictions of audited models wait when it is full. Needs a restart.", &audit_queue_kb,
      kDefaultAuditQueueKb, 256, 1024 * 1024, PGC_POSTMASTER, GUC_UNIT_KB, nullptr, nullptr, nullptr);
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

}  // namespace flock::pg
