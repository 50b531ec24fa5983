// The state a prediction call site keeps across rows (CallState) and what the files of the scoring
// path share about it: resolve.cpp fills the model and its audit policy, bind.cpp the binding of
// records to features, score.cpp and column_scorer.cpp run the model, audit_record.cpp describes
// what was scored. Private to those files; batch_exec.cpp sees only predict.hpp.
#pragma once

#include "pg.hpp"  // must come first

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <new>

#include "audit.hpp"
#include "cache.hpp"
#include "predict.hpp"

#include "flock/model.hpp"

extern "C" {
#include "utils/numeric.h"
}
#undef flock

namespace flock::pg {

// How one model feature is read from the record.
enum class Conv : uint8 { Float4, Float8, Int2, Int4, Int8, Numeric, Bool, Text, ViaOutput, Unsupported };

struct FeatureBinding {
  int attno;   // 0-based column of the record
  Conv conv;
  Oid typoutput;  // for ViaOutput
};

// Everything a call site caches across rows. Palloc'd in fn_mcxt; POD but for the handle.
struct CallState {
  MemoryContext mcxt;   // lives as long as the call site (fn_mcxt, or the executor's query context)
  bool model_is_value;  // arg 0 is flock.model (else text)
  bool input_is_record; // arg 1 is a record (else float4[])

  // Resolution of arg 0.
  uint64 generation;
  char* ref;               // name reference the model was resolved for
  char* label;             // "name@version" or "model <sha prefix>", for messages
  Oid toast_relid;         // model value stored out of line: its TOAST identity
  Oid toast_valueid;
  bytea* inline_value;     // model value stored inline: a copy to compare
  ModelHandle* handle;
  const flock::Model* model;
  char model_sha[kSha256HexSize];  // sha256 of the resolved model's bytes (its cache key)

  // Binding of a record type to the model's features.
  Oid rec_type;
  int32 rec_typmod;
  const flock::Model* bound_model;
  TupleDesc rec_desc;
  int nfeatures;           // total over inputs
  FeatureBinding* binds;

  // Audit policy of the resolved model (flock.audit_policies), refreshed with the resolution.
  AuditMode audit_mode;
  double audit_rate;
  bool audit_sync;                  // the policy's durability is 'sync'
  int32 audit_version;
  uint64 audit_generation;          // model values: catalog generation the policy was read at
  char audit_model[NAMEDATALEN];
  char value_sha[kSha256HexSize];               // model values: their sha256
  // The model's feature names and kinds as audit records carry them (built on first capture).
  const flock::Model* audit_for;
  char* audit_names;
  int audit_names_len;
  int audit_nfeat;
  uint8* audit_is_text;
  int16 audit_flags;
  Oid audit_role_id;
  char audit_role[NAMEDATALEN];
};

// What the C++ side hands back, in malloc'd buffers (no PostgreSQL allocation under the guard).
struct Scored {
  int rows;
  double* values;   // Value: one per row
  char** labels;    // Label: one malloc'd string per row
  double* numbers;  // Proba: rows x width probabilities; Tensor: rows x width output values
  int width;
  int ndims;        // Tensor: the output's dimensions past the batch
  int dims[MAXDIM];
};

inline void free_scored(Scored& s) {
  std::free(s.values);
  if (s.labels)
    for (int r = 0; r < s.rows; ++r) std::free(s.labels[r]);
  std::free(s.labels);
  std::free(s.numbers);
}

template <typename T>
T* malloc_array(size_t n) {
  auto* p = static_cast<T*>(std::calloc(std::max<size_t>(n, 1), sizeof(T)));
  if (!p) throw std::bad_alloc();
  return p;
}

// resolve.cpp
CallState* call_state(FunctionCallInfo fcinfo);

// bind.cpp
// Binds the record's columns to the model's features: by name where the model has names, else
// by column order. Errors name the missing column or the mismatched type; when `probe`, a record
// that does not bind returns false instead (nothing bound), and binding it again raises the error.
bool bind_record(CallState* st, MemoryContext mcxt, Oid rec_type, int32 rec_typmod, bool probe = false);
// Whether the features of model input k may be NULL: only where the model has missing-value
// semantics (trees, imputers).
bool null_allowed(const flock::Signature& sig, size_t k);
// The error for a NULL in feature f (feature j of input k) where the model does not allow one.
void null_feature_error(CallState* st, int f, size_t k, int64_t j);

// A feature's value as a double (inline: the column scorer calls it per value).
inline double numeric_value(Datum d, Conv conv) {
  switch (conv) {
    case Conv::Float4: return DatumGetFloat4(d);
    case Conv::Float8: return DatumGetFloat8(d);
    case Conv::Int2: return DatumGetInt16(d);
    case Conv::Int4: return DatumGetInt32(d);
    case Conv::Int8: return static_cast<double>(DatumGetInt64(d));
    case Conv::Numeric: return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
    case Conv::Bool: return DatumGetBool(d) ? 1.0 : 0.0;
    default: return NAN;
  }
}

// score.cpp
// The model's input tensors for n bound rows. C++: call inside flock_guard.
flock::FeatureBatch feature_batch(const flock::Model* model, const char* label, const RowValues* rows, int n);
// Runs the model on a batch of out.rows rows and keeps what `want` asks for in `out`. C++: call
// inside flock_guard.
void run_batch(const flock::Model* model, const char* label, const flock::FeatureBatch& batch, Want want,
               Scored& out);
// The results of a scored batch as Datums, and its audit records (`rows` are its inputs; nullptr
// when the call site has no audit policy). Frees `s`.
void deliver(CallState* st, const RowValues* rows, int n, Want want, Scored& s, Datum* out);

// audit_record.cpp
// The audit records of a scored batch (the sampled rows, split to fit the queue), palloc'd.
List* audit_records(CallState* st, const RowValues* rows, int n, Want want, const Scored& s);

}  // namespace flock::pg
