// The audit records of a scored batch: what the call scored for the sampled rows (features,
// outputs, the model's feature names), laid out as audit.hpp's AuditRecord for the queue.
#include "pg.hpp"  // must come first

#include <cstring>

#include "call_state.hpp"

extern "C" {
#include "common/pg_prng.h"
#include "utils/backend_status.h"
#include "utils/timestamp.h"
}
#undef flock

namespace flock::pg {

namespace {

// The feature names and kinds of st->model, as audit records carry them.
void audit_describe(CallState* st) {
  if (st->audit_for == st->model) return;
  const flock::Signature& sig = st->model->signature();
  int nfeat = 0;
  for (const auto& in : sig.inputs) nfeat += static_cast<int>(in.width);
  bool single = sig.inputs.size() == 1;
  bool named = !single || static_cast<int>(sig.feature_names.size()) == nfeat;
  StringInfoData names;
  initStringInfo(&names);
  uint8* is_text = static_cast<uint8*>(MemoryContextAllocZero(st->mcxt, Max(nfeat, 1)));
  int f = 0;
  int16 flags = kAuditInputFloat4;
  for (size_t k = 0; k < sig.inputs.size(); ++k) {
    flock::ElemType type = sig.inputs[k].type;
    if (type != flock::ElemType::String && type != flock::ElemType::Float) flags &= ~kAuditInputFloat4;
    for (int64_t j = 0; j < sig.inputs[k].width; ++j, ++f) {
      is_text[f] = type == flock::ElemType::String;
      if (named) {
        const std::string& name = single ? sig.feature_names[static_cast<size_t>(j)] : sig.inputs[k].name;
        appendBinaryStringInfo(&names, name.c_str(), static_cast<int>(name.size()) + 1);
      }
    }
  }
  st->audit_names = static_cast<char*>(MemoryContextAlloc(st->mcxt, Max(names.len, 1)));
  memcpy(st->audit_names, names.data, names.len);
  st->audit_names_len = names.len;
  pfree(names.data);
  st->audit_nfeat = nfeat;
  st->audit_is_text = is_text;
  st->audit_flags = flags;
  st->audit_for = st->model;
}

}  // namespace

List* audit_records(CallState* st, const RowValues* rows, int n, Want want, const Scored& s) {
  audit_describe(st);
  int* sel = static_cast<int*>(palloc(sizeof(int) * n));
  int nsel = 0;
  for (int r = 0; r < n; ++r)
    if (st->audit_mode == AuditMode::All || pg_prng_double(&pg_global_prng_state) < st->audit_rate) sel[nsel++] = r;
  if (nsel == 0) return NIL;

  Oid role = GetOuterUserId();  // the session's role, not a SECURITY DEFINER function's owner
  if (role != st->audit_role_id) {
    strlcpy(st->audit_role, GetUserNameFromId(role, false), NAMEDATALEN);
    st->audit_role_id = role;
  }
  int nfeat = st->audit_nfeat;
  int width = want == Want::Label ? 0 : want == Want::Value ? 1 : s.width;
  const uint8* is_text = st->audit_is_text;
  AuditRecord tmpl;
  memset(&tmpl, 0, sizeof(tmpl));
  tmpl.want = static_cast<int16>(want);
  tmpl.flags = static_cast<int16>(st->audit_flags | (st->audit_sync ? kAuditSync : 0));
  tmpl.model_version = st->audit_version;
  tmpl.nfeat = nfeat;
  tmpl.out_width = width;
  tmpl.names_len = st->audit_names_len;
  tmpl.query_id = static_cast<int64>(pgstat_get_my_query_id());
  tmpl.logged_at = GetCurrentStatementStartTimestamp();
  strlcpy(tmpl.role, st->audit_role, NAMEDATALEN);
  strlcpy(tmpl.model_name, st->audit_model, NAMEDATALEN);

  Size limit = audit_max_record();
  Size per_row = static_cast<Size>(nfeat) * (sizeof(double) + 1) + sizeof(double) * width;
  List* records = NIL;
  for (int start = 0; start < nsel;) {
    // The header and name blob, plus room for aligning the rows' payload at the end.
    Size bytes = audit_layout(0, nfeat, width, tmpl.names_len, 0).total + kAuditRecordAlign;
    Size text = 0;
    int end = start;
    while (end < nsel) {
      const RowValues& row = rows[sel[end]];
      Size t = 0;
      for (int f = 0; f < nfeat; ++f)
        if (is_text[f] && !row.isnull[f] && row.str[f]) t += strlen(row.str[f]) + 1;
      if (want == Want::Label) t += strlen(s.labels[sel[end]]) + 1;
      if (end > start && bytes + per_row + t > limit) break;
      bytes += per_row + t;
      text += t;
      end++;
    }
    int m = end - start;
    AuditLayout l = audit_layout(m, nfeat, width, tmpl.names_len, static_cast<int>(text));
    char* buf = static_cast<char*>(palloc0(l.total));
    auto* rec = reinterpret_cast<AuditRecord*>(buf);
    *rec = tmpl;
    rec->total_len = static_cast<uint32>(l.total);
    rec->nrows = m;
    rec->text_len = static_cast<int32>(text);
    auto* in = reinterpret_cast<double*>(buf + l.inputs);
    auto* ov = reinterpret_cast<double*>(buf + l.outputs);
    auto* nulls = reinterpret_cast<uint8*>(buf + l.input_null);
    memcpy(buf + l.feat_is_text, is_text, nfeat);
    memcpy(buf + l.names, st->audit_names, tmpl.names_len);
    char* tp = buf + l.text;
    for (int i = 0; i < m; ++i) {
      int r = sel[start + i];
      const RowValues& row = rows[r];
      for (int f = 0; f < nfeat; ++f) {
        Size c = static_cast<Size>(i) * nfeat + f;
        bool text_value = is_text[f] && !row.isnull[f] && row.str[f];
        nulls[c] = row.isnull[f] || (is_text[f] && !row.str[f]);
        in[c] = row.num[f];
        if (text_value) {
          Size len = strlen(row.str[f]) + 1;
          memcpy(tp, row.str[f], len);
          tp += len;
        }
      }
      if (want == Want::Value) ov[i] = s.values[r];
      else if (want != Want::Label) memcpy(ov + static_cast<Size>(i) * width, s.numbers + static_cast<Size>(r) * width,
                                           sizeof(double) * width);
    }
    if (want == Want::Label) {
      for (int i = 0; i < m; ++i) {
        Size len = strlen(s.labels[sel[start + i]]) + 1;
        memcpy(tp, s.labels[sel[start + i]], len);
        tp += len;
      }
    }
    records = lappend(records, buf);
    start = end;
  }
  pfree(sel);
  return records;
}

}  // namespace flock::pg
