// The SQL-callable prediction functions (flock.predict / predict_proba / predict_label /
// predict_tensor) and the scoring of bound rows: the features go into the model's input tensors,
// the model runs behind the error boundary, and the results come back as Datums (deliver), with
// the batch's audit records handed to the queue.
#include "pg.hpp"  // must come first

#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "call_state.hpp"
#include "guard.hpp"

#include "flock/binding.hpp"
#include "flock/interrupt.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(flock_predict);
PG_FUNCTION_INFO_V1(flock_predict_proba);
PG_FUNCTION_INFO_V1(flock_predict_label);
PG_FUNCTION_INFO_V1(flock_predict_tensor);
}

namespace flock::pg {

namespace {

// Scores `n` rows in one model call.
Scored score(CallState* st, const RowValues* rows, int n, Want want) {
  Scored out = {n, nullptr, nullptr, nullptr, 0, 0, {}};
  const flock::Model* model = st->model;
  const char* label = st->label;
  flock_guard([&] { run_batch(model, label, feature_batch(model, label, rows, n), want, out); });
  return out;
}

}  // namespace

flock::FeatureBatch feature_batch(const flock::Model* model, const char* label, const RowValues* rows, int n) {
  const flock::Signature& sig = model->signature();
  flock::FeatureBatch batch;
  batch.rows = n;
  int offset = 0;
  for (const auto& in : sig.inputs) {
    flock::Tensor t(in.type, {n, in.width});
    for (int r = 0; r < n; ++r) {
      if (r % 1024 == 0) flock::poll_interrupt();  // a large batch's rows are scattered in memory
      const RowValues& row = rows[r];
      for (int64_t j = 0; j < in.width; ++j) {
        size_t dst = static_cast<size_t>(r * in.width + j);
        int f = offset + static_cast<int>(j);
        switch (in.type) {
          case flock::ElemType::Float: t.f[dst] = static_cast<float>(row.num[f]); break;
          case flock::ElemType::Double: t.d[dst] = row.num[f]; break;
          case flock::ElemType::Int64:
            if (row.num[f] != std::nearbyint(row.num[f]))
              flock::fail(flock::ErrorCode::InvalidInput,
                          fmt::format("{} input '{}' takes whole numbers, got {}", label, in.name, row.num[f]));
            t.i[dst] = static_cast<int64_t>(row.num[f]);
            break;
          case flock::ElemType::String: t.s[dst] = row.str[f] ? row.str[f] : ""; break;
          case flock::ElemType::Bool: t.b[dst] = row.num[f] != 0; break;
        }
      }
    }
    offset += static_cast<int>(in.width);
    batch.inputs.push_back(std::move(t));
  }
  return batch;
}

void run_batch(const flock::Model* model, const char* label, const flock::FeatureBatch& batch, Want want,
               Scored& out) {
  const flock::Signature& sig = model->signature();
  int n = out.rows;
  if (want == Want::Tensor) {
    std::vector<flock::Tensor> outputs = model->run(batch);
    const flock::Tensor* chosen = &flock::choose_tensor_output(outputs, label);
    int rank = static_cast<int>(chosen->shape.size());
    if (rank - 1 > MAXDIM) flock::fail(flock::ErrorCode::LimitExceeded, "output tensor has too many dimensions");
    size_t total = chosen->size();
    out.width = n ? static_cast<int>(total / static_cast<size_t>(n)) : 0;
    out.ndims = rank <= 1 ? 1 : rank - 1;
    if (rank <= 1) out.dims[0] = out.width;
    else
      for (int d = 1; d < rank; ++d) out.dims[d - 1] = static_cast<int>(chosen->shape[d]);
    out.numbers = malloc_array<double>(total);
    for (size_t k = 0; k < total; ++k) out.numbers[k] = chosen->as_double(k);
    return;
  }
  flock::Prediction p = model->predict(batch, flock::predict_parts_for(want));
  flock::check_output(sig, want, label, p.n_classes);
  if (want == Want::Value) {
    out.values = malloc_array<double>(static_cast<size_t>(n));
    std::memcpy(out.values, p.values.data(), sizeof(double) * static_cast<size_t>(n));
  } else if (want == Want::Label) {
    out.labels = malloc_array<char*>(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      out.labels[r] = strdup(p.labels[static_cast<size_t>(r)].c_str());
      if (!out.labels[r]) throw std::bad_alloc();
    }
  } else {
    out.width = static_cast<int>(p.n_classes);
    out.numbers = malloc_array<double>(p.proba.size());
    std::memcpy(out.numbers, p.proba.data(), sizeof(double) * p.proba.size());
  }
}

namespace {

Datum result_datum(const Scored& s, int r, Want want) {
  switch (want) {
    case Want::Value: return Float8GetDatum(s.values[r]);
    case Want::Label: return PointerGetDatum(cstring_to_text(s.labels[r]));
    case Want::Proba: {
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * std::max(s.width, 1)));
      for (int k = 0; k < s.width; ++k) elems[k] = Float8GetDatum(s.numbers[r * s.width + k]);
      return PointerGetDatum(construct_array(elems, s.width, FLOAT8OID, sizeof(float8), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
    }
    case Want::Tensor: {
      if (s.width == 0) return PointerGetDatum(construct_empty_array(FLOAT4OID));
      Datum* elems = static_cast<Datum*>(palloc(sizeof(Datum) * s.width));
      for (int k = 0; k < s.width; ++k) elems[k] = Float4GetDatum(static_cast<float4>(s.numbers[r * s.width + k]));
      int lbs[MAXDIM];
      int dims[MAXDIM];
      for (int d = 0; d < s.ndims; ++d) {
        lbs[d] = 1;
        dims[d] = s.dims[d];
      }
      return PointerGetDatum(construct_md_array(elems, nullptr, s.ndims, dims, lbs, FLOAT4OID, sizeof(float4), true,
                                                TYPALIGN_INT));
    }
  }
  return (Datum)0;
}

Datum predict_entry(FunctionCallInfo fcinfo, Want want) {
  if (PG_ARGISNULL(0))
    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model must not be NULL"),
                    errhint("Pass a model name ('name' or 'name@N') or a flock.model value.")));
  if (PG_ARGISNULL(1)) PG_RETURN_NULL();  // no row, no prediction
  CallState* st = call_state(fcinfo);
  resolve_model(st, PG_GETARG_DATUM(0));
  RowValues row = extract_row(st, PG_GETARG_DATUM(1));
  Datum result;
  score_rows(st, &row, 1, want, &result);
  return result;
}

}  // namespace

void deliver(CallState* st, const RowValues* rows, int n, Want want, Scored& s, Datum* out) {
  // Audit records are built before the results are freed and enqueued after (enqueueing may wait
  // for room in the queue, or be cancelled).
  List* records = st->audit_mode != AuditMode::Off ? audit_records(st, rows, n, want, s) : NIL;
  for (int r = 0; r < n; ++r) out[r] = result_datum(s, r, want);
  free_scored(s);
  ListCell* lc;
  foreach (lc, records) {
    audit_enqueue(static_cast<const AuditRecord*>(lfirst(lc)));
    pfree(lfirst(lc));
  }
  list_free(records);
}

void score_rows(CallState* st, const RowValues* rows, int n, Want want, Datum* out) {
  if (n == 0) return;
  Scored s = score(st, rows, n, want);
  deliver(st, rows, n, want, s, out);
}

Size call_bytes_per_row(const CallState* st) {
  Size features = 0;
  for (const auto& in : st->model->signature().inputs) features += static_cast<Size>(std::max<int64_t>(in.width, 1));
  // RowValues per feature: a double, a string pointer and a null flag.
  return st->model->bytes_per_row() + features * (sizeof(double) + sizeof(char*) + sizeof(bool)) + sizeof(RowValues);
}

}  // namespace flock::pg

using namespace flock::pg;

Datum flock_predict(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Value); }
Datum flock_predict_proba(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Proba); }
Datum flock_predict_label(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Label); }
Datum flock_predict_tensor(PG_FUNCTION_ARGS) { return predict_entry(fcinfo, Want::Tensor); }
