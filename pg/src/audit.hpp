// Inference capture: prediction functions hand compact binary records of what they scored to a
// shared-memory queue (one per database); a background worker drains it and stores the records in
// flock.inference_log in transactions of its own, so the log survives the scoring transaction's
// rollback. Plain PostgreSQL code (no C++ objects), callable outside flock_guard.
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

enum class AuditMode : int { Off = 0, Sample = 1, All = 2 };

// When a statement's records must be durable: 'async' (the writer stores them soon after; a crash
// loses those still queued) or 'sync' (the statement returns only once the writer has committed
// them and flushed the commit to WAL).
enum class AuditDurability : int { Async = 0, Sync = 1 };

// GUC: bytes of queue per database slot, in kB (postmaster).
extern int audit_queue_kb;
// GUC flock.audit_durability: a session may ask for 'sync'; it cannot weaken a policy's 'sync'.
extern int audit_durability;
// GUC flock.audit_sync_timeout (ms): longest a 'sync' statement waits for the writer.
extern int audit_sync_timeout_ms;

// The model takes its numeric features as float32: the writer stores them as real (what the model
// saw, shown as 20.29 rather than 20.290000915527344, in half the bytes).
constexpr int16 kAuditInputFloat4 = 1;
// The model's policy says durability 'sync' (audit_enqueue adds it when the session asks).
constexpr int16 kAuditSync = 2;

// Records start at multiples of this in the queue's ring (its size is one too).
constexpr Size kAuditRecordAlign = 8;

// One record: what one call scored for some rows of one statement. Followed by its payload (see
// AuditLayout); total_len (a multiple of kAuditRecordAlign) covers header and payload.
struct AuditRecord {
  uint32 total_len;
  int16 want;             // Want: predict, predict_proba, predict_label, predict_tensor
  int16 flags;            // kAuditInputFloat4
  int32 model_version;
  int32 nrows;
  int32 nfeat;
  int32 out_width;        // numbers per row in the outputs (0 for labels)
  int32 names_len;        // bytes of the feature-name blob
  int32 text_len;         // bytes of the string blob
  int32 enqueuer_procno;  // set by audit_enqueue: whom to tell when a record could not be stored
  int32 enqueuer_pid;
  int64 query_id;         // 0: none
  TimestampTz logged_at;  // the statement's start: one statement's records group into one batch
  char role[NAMEDATALEN];
  char model_name[NAMEDATALEN];
};
static_assert(sizeof(AuditRecord) % kAuditRecordAlign == 0, "records stay aligned in the queue");

// Payload offsets from the start of the record:
//   double inputs[nrows * nfeat]     numeric features (unused where text or NULL)
//   double outputs[nrows * out_width]
//   uint8  input_null[nrows * nfeat]
//   uint8  feat_is_text[nfeat]
//   char   names[names_len]          nfeat NUL-terminated feature names, or nothing
//   char   text[text_len]            NUL-terminated: non-NULL text features row by row, then labels
struct AuditLayout {
  Size inputs, outputs, input_null, feat_is_text, names, text, total;
};

inline AuditLayout audit_layout(int nrows, int nfeat, int out_width, int names_len, int text_len) {
  AuditLayout l;
  Size cells = static_cast<Size>(nrows) * static_cast<Size>(nfeat);
  l.inputs = sizeof(AuditRecord);
  l.outputs = l.inputs + sizeof(double) * cells;
  l.input_null = l.outputs + sizeof(double) * static_cast<Size>(nrows) * static_cast<Size>(out_width);
  l.feat_is_text = l.input_null + cells;
  l.names = l.feat_is_text + static_cast<Size>(nfeat);
  l.text = l.names + static_cast<Size>(names_len);
  l.total = TYPEALIGN(kAuditRecordAlign, l.text + static_cast<Size>(text_len));
  return l;
}

// Shared memory and the worker: call from _PG_init (does nothing unless preloaded).
void install_audit();
// Is the queue there (flock in shared_preload_libraries)?
bool audit_available();
// Largest record the queue takes; callers split bigger batches.
Size audit_max_record();
// Appends a record to this database's queue, waiting (interruptibly) while the queue is full:
// records are never dropped. Starts the worker when none runs. A 'sync' record (its policy's flag
// or the session's flock.audit_durability) makes the current top-level statement wait, when it
// ends, until the writer has committed it (see audit_queue.cpp: audit_wait_durable).
void audit_enqueue(const AuditRecord* rec);

}  // namespace flock::pg
