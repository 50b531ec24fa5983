// What the audit queue (audit_queue.cpp: shared memory, enqueue, 'sync' waits) and its writer
// (audit_writer.cpp: the background worker, flock.audit_flush / audit_status) share: the layout of
// the shared block and the few functions both call. Private to those two files.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
}
#undef flock

#include "audit.hpp"

namespace flock::pg {

constexpr int kSlots = 8;                 // databases with pending records at once
constexpr long kIdleExitMs = 1000;        // an idle worker leaves (DROP DATABASE waits up to 5 s)
constexpr long kStartRetryMs = 10000;     // a requested worker that never showed up is requested again
constexpr int kMaxRowsPerLogRow = 8192;   // consecutive records of a statement merge up to this
constexpr Size kMaxBytesPerTransaction = 16 * 1024 * 1024;
constexpr long kWaitRecheckMs = 100;  // 'sync' and audit_flush waits re-check at least this often

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

// The shared block (nullptr: flock is not in shared_preload_libraries).
extern AuditShared* shared;

// The slot's ring buffer.
char* ring_of(AuditSlot* slot);
// Every backend's AuditProcState, indexed by PGPROC number.
AuditProcState* procs();
// Copies len bytes from ring position pos (wrapping).
void ring_read(AuditSlot* slot, uint64 pos, char* dst, Size len);
// This database's slot; with `claim`, a free one is taken when it has none. Caller holds shared->lock.
AuditSlot* slot_for(Oid db, bool claim);
// Starts the writer of slot idx unless one runs or was just requested.
void ensure_worker(int idx);
// Raises the error for a queue that is not there.
void require_audit();
// Milliseconds from `start` to now.
long ms_since(TimestampTz start);
// Statements (and commits) of this session that waited for 'sync' records: flock.audit_status.
extern uint64 durable_statements;

}  // namespace flock::pg
