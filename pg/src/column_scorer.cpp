// Columnar scoring: a batch's features go from the rows' column values straight into the model's
// input tensors, which live as long as the scorer and are reused from batch to batch. Used by the
// batch node (batch_exec.cpp) for rows read from a table's columns.
#include "pg.hpp"  // must come first

#include <cmath>
#include <new>

#include "access/tupmacs.h"
#include "executor/tuptable.h"

#include "call_state.hpp"
#include "guard.hpp"

namespace flock::pg {

namespace {

// Where one bound feature comes from and goes to.
struct ColumnFeature {
  int src;         // index into the row's values
  bool read;       // the model reads it (else it is only checked for a NULL the model cannot take)
  Conv conv;
  bool null_ok;    // the model has missing-value handling for it (else a NULL is an error)
  bool to_double;  // the input is Double (else Float)
  int input;       // model input k
  int64_t width;   // values per row of input k
  int64_t col;     // position in input k's row
};

// Features first..first+count-1 of a row, adjacent float4 columns at byte `offset` of the tuple's data.
struct StoredRun {
  int first;
  int count;
  int offset;
};

}  // namespace

struct ColumnScorer {
  CallState* st;
  int capacity;             // rows per batch at most
  int rows_alloc;           // rows the tensors (and audit arrays) have room for: grown on demand
  int nfeat;
  int width;                // leading columns of a row that are read
  ColumnFeature* feats;     // [nfeat]
  int nactive;              // features written or checked, in order: all but those the model does
  int* active;              // not read and that may be NULL  [nactive]
  // The common case, taken by a plain loop: one float input fed by float4 columns, no audit.
  bool float4_row;
  int* srcs;                // [nactive] feats[active[j]].src
  int ninputs;
  float** fdst;             // [ninputs] input tensors' storage (Float inputs)
  double** ddst;            // [ninputs] (Double inputs)
  // The first NULL the model cannot take in this batch: raised when the batch is scored, so the
  // errors come in the same order as extract_columns() raises them.
  int null_row;
  int null_feat;
  // With audit capture on, the features as extract_columns() gives them, [rows_alloc][nfeat].
  bool audit;
  double* audit_num;
  bool* audit_null;
  char** no_text;           // [nfeat] NULLs: audit records read text only for string inputs
  // Rows as stored (float4_row only): the features' runs of adjacent columns at fixed offsets in
  // a heap tuple of `stored_desc`, copied without deforming the tuple (column_scorer_add_stored).
  TupleDesc stored_desc;    // the descriptor the runs were laid out for (nullptr: none yet)
  const int* stored_map;    // and the row columns' table columns (nullptr: the same)
  bool stored_ok;           // every column up to the last read has a fixed length, the features are float4
  int stored_natts;         // columns a tuple must hold (else it predates one: deform it)
  int nruns;
  StoredRun* runs;          // [nactive] at most
  flock::FeatureBatch batch;  // C++; destroyed when the memory context goes
};

namespace {

void destroy_column_scorer(void* arg) { static_cast<ColumnScorer*>(arg)->~ColumnScorer(); }

// Sets the batch to n rows. Shrinking keeps the first n rows' values and never reallocates.
void set_batch_rows(flock::FeatureBatch& batch, int n) {
  batch.rows = n;
  for (auto& t : batch.inputs) {
    t.shape[0] = n;
    size_t size = static_cast<size_t>(n) * static_cast<size_t>(t.shape[1]);
    if (t.type == flock::ElemType::Float) t.f.resize(size);
    else t.d.resize(size);
  }
}

}  // namespace

ColumnScorer* column_scorer(CallState* st, Oid rowtype, int offset, int capacity, const bool* feature_read) {
  const flock::Signature& sig = st->model->signature();
  for (const auto& in : sig.inputs)
    if (in.type != flock::ElemType::Float && in.type != flock::ElemType::Double) return nullptr;
  if (!bind_record(st, st->mcxt, rowtype, -1, /*probe=*/true)) return nullptr;
  for (int f = 0; f < st->nfeatures; ++f) {
    switch (st->binds[f].conv) {
      case Conv::Float4: case Conv::Float8: case Conv::Int2: case Conv::Int4: case Conv::Int8: case Conv::Bool:
        break;
      default:
        return nullptr;  // numeric (a function call that can fail), text
    }
  }
  MemoryContext mcxt = st->mcxt;
  void* mem = MemoryContextAllocZero(mcxt, sizeof(ColumnScorer));
  auto* cs = new (mem) ColumnScorer();  // no allocation: empty vectors
  auto* cb = static_cast<MemoryContextCallback*>(MemoryContextAllocZero(mcxt, sizeof(MemoryContextCallback)));
  cb->func = destroy_column_scorer;
  cb->arg = cs;
  MemoryContextRegisterResetCallback(mcxt, cb);
  cs->st = st;
  cs->capacity = std::max(capacity, 1);
  cs->nfeat = st->nfeatures;
  cs->ninputs = static_cast<int>(sig.inputs.size());
  cs->feats = static_cast<ColumnFeature*>(MemoryContextAllocZero(mcxt, sizeof(ColumnFeature) * std::max(cs->nfeat, 1)));
  cs->fdst = static_cast<float**>(MemoryContextAllocZero(mcxt, sizeof(float*) * cs->ninputs));
  cs->ddst = static_cast<double**>(MemoryContextAllocZero(mcxt, sizeof(double*) * cs->ninputs));
  int f = 0;
  for (int k = 0; k < cs->ninputs; ++k) {
    const flock::InputSpec& in = sig.inputs[static_cast<size_t>(k)];
    for (int64_t j = 0; j < in.width; ++j, ++f) {
      ColumnFeature& ft = cs->feats[f];
      ft.src = offset + st->binds[f].attno;
      ft.conv = st->binds[f].conv;
      ft.null_ok = null_allowed(sig, static_cast<size_t>(k));
      ft.to_double = in.type == flock::ElemType::Double;
      ft.input = k;
      ft.width = in.width;
      ft.col = j;
    }
  }
  cs->audit = st->audit_mode != AuditMode::Off;
  // A feature the model does not read is not written (its input value stays 0: vectors grow
  // zero-filled and nothing else writes it) unless it lies between two read real columns (below);
  // its column is still looked at when a NULL in it is an error, so that the same rows fail as
  // without the optimizer.
  cs->active = static_cast<int*>(MemoryContextAlloc(mcxt, sizeof(int) * std::max(cs->nfeat, 1)));
  cs->srcs = static_cast<int*>(MemoryContextAlloc(mcxt, sizeof(int) * std::max(cs->nfeat, 1)));
  cs->float4_row = !cs->audit && cs->ninputs == 1 && sig.inputs[0].type == flock::ElemType::Float;
  int first_read = cs->nfeat, last_read = -1;
  for (f = 0; f < cs->nfeat; ++f) {
    ColumnFeature& ft = cs->feats[f];
    ft.read = cs->audit || !feature_read || cs->ninputs != 1 || feature_read[f];
    if (!ft.read) continue;
    first_read = std::min(first_read, f);
    last_read = f;
  }
  for (f = 0; f < cs->nfeat; ++f) {
    ColumnFeature& ft = cs->feats[f];
    // An unread real column between two read ones is written all the same (the value it holds,
    // as without the optimizer, which the model ignores): a stored row's features then copy as
    // one run of adjacent columns rather than many short ones.
    if (!ft.read && cs->float4_row && ft.conv == Conv::Float4 && f > first_read && f < last_read) ft.read = true;
    if (!ft.read && ft.null_ok) continue;
    cs->active[cs->nactive] = f;
    cs->srcs[cs->nactive++] = ft.src;
    cs->width = std::max(cs->width, ft.src + 1);
    cs->float4_row = cs->float4_row && ft.read && ft.conv == Conv::Float4;
  }
  if (cs->audit)
    cs->no_text = static_cast<char**>(MemoryContextAllocZero(mcxt, sizeof(char*) * std::max(cs->nfeat, 1)));
  cs->null_row = -1;
  const flock::Model* model = st->model;
  flock_guard([&] {
    for (const auto& in : model->signature().inputs)
      cs->batch.inputs.emplace_back(in.type, std::vector<int64_t>{0, in.width});
  });
  return cs;
}

int column_scorer_width(const ColumnScorer* cs) { return cs->width; }

namespace {

// The input tensors' storage, after it moved.
void point_at_tensors(ColumnScorer* cs) {
  for (int k = 0; k < cs->ninputs; ++k) {
    flock::Tensor& t = cs->batch.inputs[static_cast<size_t>(k)];
    cs->fdst[k] = t.type == flock::ElemType::Float ? t.f.data() : nullptr;
    cs->ddst[k] = t.type == flock::ElemType::Double ? t.d.data() : nullptr;
  }
}

// Room for at least `rows` rows: storage grows as rows come, so a large batch size costs nothing
// on a small table.
void grow(ColumnScorer* cs, int rows) {
  Assert(rows <= cs->capacity);
  int to = std::min(cs->capacity, std::max(rows, std::max(2 * cs->rows_alloc, 64)));
  flock_guard([&] { set_batch_rows(cs->batch, to); });
  point_at_tensors(cs);
  if (cs->audit) {
    Size cells = static_cast<Size>(to) * std::max(cs->nfeat, 1);
    MemoryContext mcxt = cs->st->mcxt;
    cs->audit_num = static_cast<double*>(cs->audit_num ? repalloc_huge(cs->audit_num, sizeof(double) * cells)
                                                       : MemoryContextAllocHuge(mcxt, sizeof(double) * cells));
    cs->audit_null = static_cast<bool*>(cs->audit_null ? repalloc_huge(cs->audit_null, sizeof(bool) * cells)
                                                       : MemoryContextAllocHuge(mcxt, sizeof(bool) * cells));
  }
  cs->rows_alloc = to;
}

}  // namespace

void column_scorer_start(ColumnScorer* cs) {
  cs->null_row = -1;
  point_at_tensors(cs);
}

void column_scorer_add(ColumnScorer* cs, int r, const Datum* values, const bool* isnull) {
  if (r >= cs->rows_alloc) grow(cs, r + 1);
  if (cs->float4_row) {
    float* dst = cs->fdst[0] + static_cast<size_t>(r) * cs->nfeat;
    for (int j = 0; j < cs->nactive; ++j) {
      const int f = cs->active[j];
      int a = cs->srcs[j];
      if (likely(!isnull[a])) {
        dst[f] = DatumGetFloat4(values[a]);
        continue;
      }
      dst[f] = NAN;
      if (!cs->feats[f].null_ok && cs->null_row < 0) {
        cs->null_row = r;
        cs->null_feat = f;
      }
    }
    return;
  }
  double* audit_num = cs->audit ? cs->audit_num + static_cast<Size>(r) * cs->nfeat : nullptr;
  bool* audit_null = cs->audit ? cs->audit_null + static_cast<Size>(r) * cs->nfeat : nullptr;
  for (int j = 0; j < cs->nactive; ++j) {
    const int f = cs->active[j];
    const ColumnFeature& ft = cs->feats[f];
    bool null = isnull[ft.src];
    if (!ft.read) {  // only a NULL the model cannot take matters
      if (null && !ft.null_ok && cs->null_row < 0) {
        cs->null_row = r;
        cs->null_feat = f;
      }
      continue;
    }
    // The same value extract_columns() gives, and the same conversion to the input's type.
    double v = null ? NAN : numeric_value(values[ft.src], ft.conv);
    if (null && !ft.null_ok && cs->null_row < 0) {
      cs->null_row = r;
      cs->null_feat = f;
    }
    size_t dst = static_cast<size_t>(r * ft.width + ft.col);
    if (ft.to_double) cs->ddst[ft.input][dst] = v;
    else cs->fdst[ft.input][dst] = static_cast<float>(v);
    if (audit_num) {
      audit_num[f] = v;
      audit_null[f] = null;
    }
  }
}

namespace {

// Lays out the runs for tuples of `desc`, row column a being table column map[a] (0-based, -1: none;
// no map: a). Every column up to the last one read must have a fixed length: then a tuple without NULLs
// holds each column at the offset heap_fill_tuple gave it, the one PostgreSQL caches as attcacheoff.
void lay_out_stored(ColumnScorer* cs, TupleDesc desc, const int* map) {
  cs->stored_desc = desc;
  cs->stored_map = map;
  cs->stored_ok = false;
  cs->nruns = 0;
  if (!cs->float4_row) return;
  int natts = 0;
  for (int j = 0; j < cs->nactive; ++j) {
    const int a = map ? map[cs->srcs[j]] : cs->srcs[j];
    if (a < 0) return;  // not a table column
    natts = std::max(natts, a + 1);
  }
  if (natts > desc->natts) return;
  int* offsets = static_cast<int*>(palloc(sizeof(int) * std::max(natts, 1)));
  int off = 0;
  for (int a = 0; a < natts; ++a) {
    Form_pg_attribute att = TupleDescAttr(desc, a);
    if (att->attlen <= 0) return;
    off = att_align_nominal(off, att->attalign);
    offsets[a] = off;
    off += att->attlen;
  }
  if (!cs->runs) cs->runs = static_cast<StoredRun*>(MemoryContextAlloc(cs->st->mcxt, sizeof(StoredRun) * std::max(cs->nactive, 1)));
  for (int j = 0; j < cs->nactive; ++j) {
    const int f = cs->active[j];
    const int a = map ? map[cs->srcs[j]] : cs->srcs[j];
    Form_pg_attribute att = TupleDescAttr(desc, a);
    if (att->atttypid != FLOAT4OID || att->attlen != 4 || att->attisdropped) return;
    StoredRun* last = cs->nruns > 0 ? &cs->runs[cs->nruns - 1] : nullptr;
    if (last && last->first + last->count == f && last->offset + 4 * last->count == offsets[a]) {
      last->count++;
    } else {
      cs->runs[cs->nruns++] = StoredRun{f, 1, offsets[a]};
    }
  }
  pfree(offsets);
  cs->stored_natts = natts;
  cs->stored_ok = true;
}

}  // namespace

bool column_scorer_add_stored(ColumnScorer* cs, int r, TupleTableSlot* slot) {
  if (!cs->float4_row || !(TTS_IS_BUFFERTUPLE(slot) || TTS_IS_HEAPTUPLE(slot))) return false;
  HeapTuple tuple = reinterpret_cast<HeapTupleTableSlot*>(slot)->tuple;
  return tuple && column_scorer_add_tuple(cs, r, tuple->t_data, slot->tts_tupleDescriptor, nullptr);
}

bool column_scorer_add_tuple(ColumnScorer* cs, int r, HeapTupleHeader header, TupleDesc desc, const int* map) {
  if (!cs->float4_row || (header->t_infomask & HEAP_HASNULL)) return false;
  if (unlikely(desc != cs->stored_desc || map != cs->stored_map)) lay_out_stored(cs, desc, map);
  if (!cs->stored_ok || HeapTupleHeaderGetNatts(header) < cs->stored_natts) return false;
  if (r >= cs->rows_alloc) grow(cs, r + 1);
  const char* data = reinterpret_cast<const char*>(header) + header->t_hoff;
  float* dst = cs->fdst[0] + static_cast<size_t>(r) * cs->nfeat;
  for (int i = 0; i < cs->nruns; ++i) {
    const StoredRun& run = cs->runs[i];
    memcpy(dst + run.first, data + run.offset, sizeof(float) * static_cast<size_t>(run.count));
  }
  return true;
}

void column_scorer_score(ColumnScorer* cs, int n, Want want, Datum* out) {
  CallState* st = cs->st;
  Assert(cs->audit == (st->audit_mode != AuditMode::Off));  // the policy is read once per query
  if (cs->null_row >= 0) {
    const ColumnFeature& ft = cs->feats[cs->null_feat];
    null_feature_error(st, cs->null_feat, static_cast<size_t>(ft.input), ft.col);
  }
  if (n == 0) return;
  Scored s = {n, nullptr, nullptr, nullptr, 0, 0, {}};
  const flock::Model* model = st->model;
  const char* label = st->label;
  flock_guard([&] {
    if (n != cs->batch.rows) {  // a short batch: keeps the storage
      set_batch_rows(cs->batch, n);
      cs->rows_alloc = n;
    }
    run_batch(model, label, cs->batch, want, s);
  });
  RowValues* rows = nullptr;
  if (cs->audit) {
    rows = static_cast<RowValues*>(palloc(sizeof(RowValues) * n));
    for (int r = 0; r < n; ++r)
      rows[r] = {cs->nfeat, cs->audit_num + static_cast<Size>(r) * cs->nfeat, cs->no_text,
                 cs->audit_null + static_cast<Size>(r) * cs->nfeat};
  }
  deliver(st, rows, n, want, s, out);
}

}  // namespace flock::pg
