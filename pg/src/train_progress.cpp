// flock.train_progress: one slot per backend in shared memory, written only by its backend while
// it trains, read by any session, as pg_stat_progress_* reads PgBackendStatus. A reader copies a
// slot between two reads of its change count and retries when a write was under way (the
// st_changecount protocol of backend_status.h). Plain C style.
#include "train.hpp"  // must come first

extern "C" {
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
}
#undef flock

#include <cmath>

extern "C" {
PG_FUNCTION_INFO_V1(flock_train_progress);
}

namespace flock::pg {

int train_memory_kb = 1024 * 1024;  // 1 GB
int train_notice_rounds = 0;

namespace {

constexpr int kNameBytes = 64;
constexpr int kShortBytes = 16;

struct TrainProgressSlot {
  volatile uint32 changecount;  // odd while its backend writes it
  int pid;                      // 0: not training
  Oid user;
  Oid database;
  char model[kNameBytes];
  char algorithm[kShortBytes];
  char phase[kShortBytes];
  int64 rows;
  int features;
  int round;
  int rounds;
  double metric;
  TimestampTz started;
};

TrainProgressSlot* slots = nullptr;
int slot_count = 0;
shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

Size slots_bytes() { return mul_size(sizeof(TrainProgressSlot), MaxBackends); }

void progress_shmem_request() {
  if (prev_shmem_request_hook) prev_shmem_request_hook();
  RequestAddinShmemSpace(slots_bytes());
}

void progress_shmem_startup() {
  if (prev_shmem_startup_hook) prev_shmem_startup_hook();
  LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
  bool found;
  slots = static_cast<TrainProgressSlot*>(ShmemInitStruct("flock_train_progress", slots_bytes(), &found));
  if (!found) memset(slots, 0, slots_bytes());
  slot_count = MaxBackends;
  LWLockRelease(AddinShmemInitLock);
}

TrainProgressSlot* my_slot() {
  if (slots == nullptr || MyBackendId == InvalidBackendId || MyBackendId > slot_count) return nullptr;
  return &slots[MyBackendId - 1];
}

void begin_write(TrainProgressSlot* slot) {
  slot->changecount = slot->changecount + 1;
  pg_write_barrier();
}

void end_write(TrainProgressSlot* slot) {
  pg_write_barrier();
  slot->changecount = slot->changecount + 1;
}

// An error ends the run: its (sub)transaction's abort clears the slot. A run is synchronous, so an
// abort while the slot is set is the run's own.
void clear_on_abort(XactEvent event, void*) {
  if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) train_progress_end();
}
void clear_on_subabort(SubXactEvent event, SubTransactionId, SubTransactionId, void*) {
  if (event == SUBXACT_EVENT_ABORT_SUB) train_progress_end();
}

}  // namespace

void install_training() {
  DefineCustomIntVariable(
      "flock.train_memory", "Memory flock.train may take for the training data.",
      "Counted as the rows read times their features and target in float4, three times "
      "(the rows read, XGBoost's copy and its matrix). Past it flock.train fails (54000).",
      &train_memory_kb, 1024 * 1024, 1024, MAX_KILOBYTES, PGC_USERSET, GUC_UNIT_KB, nullptr, nullptr,
      nullptr);
  DefineCustomIntVariable("flock.train_notice_rounds", "flock.train sends a NOTICE every this many rounds.",
                          "0: no NOTICE.", &train_notice_rounds, 0, 0, INT_MAX, PGC_USERSET, 0, nullptr,
                          nullptr, nullptr);
  if (!process_shared_preload_libraries_in_progress) return;
  prev_shmem_request_hook = shmem_request_hook;
  shmem_request_hook = progress_shmem_request;
  prev_shmem_startup_hook = shmem_startup_hook;
  shmem_startup_hook = progress_shmem_startup;
  RegisterXactCallback(clear_on_abort, nullptr);
  RegisterSubXactCallback(clear_on_subabort, nullptr);
}

void train_progress_begin(const char* model, const char* algorithm, int64 rows, int features) {
  TrainProgressSlot* slot = my_slot();
  if (slot == nullptr) return;
  begin_write(slot);
  slot->pid = MyProcPid;
  slot->user = GetUserId();
  slot->database = MyDatabaseId;
  strlcpy(slot->model, model, kNameBytes);
  strlcpy(slot->algorithm, algorithm, kShortBytes);
  strlcpy(slot->phase, "reading", kShortBytes);
  slot->rows = rows;
  slot->features = features;
  slot->round = 0;
  slot->rounds = 0;
  slot->metric = std::nan("");
  slot->started = GetCurrentTimestamp();
  end_write(slot);
}

void train_progress_rows(int64 rows) {
  TrainProgressSlot* slot = my_slot();
  if (slot == nullptr || slot->pid == 0) return;
  begin_write(slot);
  slot->rows = rows;
  end_write(slot);
}

void train_progress_update(const char* phase, int round, int rounds, double metric) {
  TrainProgressSlot* slot = my_slot();
  if (slot == nullptr || slot->pid == 0) return;
  begin_write(slot);
  strlcpy(slot->phase, phase, kShortBytes);
  slot->round = round;
  slot->rounds = rounds;
  slot->metric = metric;
  end_write(slot);
}

void train_progress_end() {
  TrainProgressSlot* slot = my_slot();
  if (slot == nullptr || slot->pid == 0) return;
  begin_write(slot);
  slot->pid = 0;
  end_write(slot);
}

}  // namespace flock::pg

using namespace flock::pg;

// flock.train_progress(): the backends training now, as pg_stat_progress_* shows them: every row
// to superusers and pg_read_all_stats, otherwise the caller's roles' own.
extern "C" Datum flock_train_progress(PG_FUNCTION_ARGS) {
  ReturnSetInfo* rsinfo = reinterpret_cast<ReturnSetInfo*>(fcinfo->resultinfo);
  InitMaterializedSRF(fcinfo, 0);
  for (int i = 0; slots != nullptr && i < slot_count; ++i) {
    TrainProgressSlot copy;
    for (;;) {
      const uint32 before = slots[i].changecount;
      pg_read_barrier();
      memcpy(&copy, &slots[i], sizeof copy);
      pg_read_barrier();
      if (before == slots[i].changecount && (before & 1) == 0) break;
      CHECK_FOR_INTERRUPTS();
    }
    if (copy.pid == 0) continue;
    if (!has_privs_of_role(GetUserId(), copy.user) && !has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS))
      continue;
    Datum values[12];
    bool nulls[12] = {false};
    values[0] = Int32GetDatum(copy.pid);
    values[1] = ObjectIdGetDatum(copy.database);
    values[2] = ObjectIdGetDatum(copy.user);
    values[3] = CStringGetTextDatum(copy.model);
    values[4] = CStringGetTextDatum(copy.algorithm);
    values[5] = CStringGetTextDatum(copy.phase);
    values[6] = Int64GetDatum(copy.rows);
    values[7] = Int32GetDatum(copy.features);
    values[8] = Int32GetDatum(copy.round);
    values[9] = Int32GetDatum(copy.rounds);
    values[10] = Float8GetDatum(copy.metric);
    nulls[10] = std::isnan(copy.metric);
    values[11] = TimestampTzGetDatum(copy.started);
    tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
  }
  return (Datum)0;
}
