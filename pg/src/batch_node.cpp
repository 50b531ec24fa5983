// The one encoder and decoder of the batch node's custom_private (see batch_node.hpp).
#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "catalog/pg_type_d.h"
}
#undef flock

#include <algorithm>
#include <cmath>
#include <cstring>

#include "batch_node.hpp"

namespace flock::pg {

List* encode_row_columns(const RowColumns& rc) {
  List* out = list_make3(makeInteger(rc.first), makeInteger(rc.natts), makeInteger(static_cast<int>(rc.rowtype)));
  if (rc.table_columns) {
    List* map = NIL;
    for (int a = 0; a < rc.natts; ++a) map = lappend(map, makeInteger(rc.table_columns[a]));
    out = lappend(out, map);
  }
  return out;
}

RowColumns decode_row_columns(List* encoded) {
  if (list_length(encoded) != 3 && list_length(encoded) != 4) elog(ERROR, "flock: malformed %s plan node", kBatchNodeName);
  RowColumns rc = {intVal(linitial(encoded)), intVal(lsecond(encoded)), static_cast<Oid>(intVal(lthird(encoded)))};
  if (list_length(encoded) == 4) {
    List* map = static_cast<List*>(lfourth(encoded));
    if (list_length(map) != rc.natts) elog(ERROR, "flock: malformed %s plan node", kBatchNodeName);
    rc.table_columns = static_cast<int*>(palloc(sizeof(int) * std::max(rc.natts, 1)));
    for (int a = 0; a < rc.natts; ++a) rc.table_columns[a] = intVal(list_nth(map, a));
  }
  return rc;
}

List* encode_batch_private(const BatchPrivate& p) {
  List* wants = NIL;
  List* row_columns = NIL;
  for (int k = 0; k < p.ncalls; ++k) {
    wants = lappend(wants, makeInteger(p.explains[k] ? kExplainCall : static_cast<int>(p.wants[k])));
    row_columns = lappend(row_columns, encode_row_columns(p.row_columns[k]));
  }
  List* facts = NIL;
  for (int i = 0; i < p.nfacts; ++i) {
    const ColumnFact& f = p.facts[i];
    uint64 bits;
    memcpy(&bits, &f.value, sizeof(bits));
    List* fact = list_make4(makeInteger(f.attno), makeInteger(static_cast<int>(f.op)), makeInteger(f.integer),
                            makeInteger(f.null_passes));
    fact = lappend(fact, makeInteger(static_cast<int>(static_cast<uint32>(bits >> 32))));
    fact = lappend(fact, makeInteger(static_cast<int>(static_cast<uint32>(bits))));
    fact = lappend(fact, makeInteger(f.param));
    fact = lappend(fact, makeInteger(static_cast<int>(f.param_type)));
    facts = lappend(facts, fact);
  }
  return list_make5(wants, row_columns, p.copied, p.sources, facts);
}

BatchPrivate decode_batch_private(List* custom_private) {
  if (list_length(custom_private) != 5) elog(ERROR, "flock: malformed %s plan node", kBatchNodeName);
  BatchPrivate p;
  List* wants = static_cast<List*>(linitial(custom_private));
  List* row_columns = static_cast<List*>(lsecond(custom_private));
  p.copied = static_cast<List*>(lthird(custom_private));
  p.sources = static_cast<List*>(lfourth(custom_private));
  p.ncalls = list_length(wants);
  p.wants = static_cast<Want*>(palloc(sizeof(Want) * std::max(p.ncalls, 1)));
  p.explains = static_cast<bool*>(palloc(sizeof(bool) * std::max(p.ncalls, 1)));
  p.row_columns = static_cast<RowColumns*>(palloc(sizeof(RowColumns) * std::max(p.ncalls, 1)));
  for (int k = 0; k < p.ncalls; ++k) {
    const int want = intVal(list_nth(wants, k));
    p.explains[k] = want == kExplainCall;
    p.wants[k] = p.explains[k] ? Want::Value : static_cast<Want>(want);
    p.row_columns[k] = decode_row_columns(static_cast<List*>(list_nth(row_columns, k)));
  }
  List* facts = static_cast<List*>(list_nth(custom_private, 4));
  p.nfacts = list_length(facts);
  p.facts = static_cast<ColumnFact*>(palloc(sizeof(ColumnFact) * std::max(p.nfacts, 1)));
  for (int i = 0; i < p.nfacts; ++i) {
    List* f = static_cast<List*>(list_nth(facts, i));
    if (list_length(f) != 8) elog(ERROR, "flock: malformed %s plan node", kBatchNodeName);
    uint64 bits = (static_cast<uint64>(static_cast<uint32>(intVal(list_nth(f, 4)))) << 32) |
                  static_cast<uint32>(intVal(list_nth(f, 5)));
    double value;
    memcpy(&value, &bits, sizeof(value));
    p.facts[i] = {intVal(linitial(f)), static_cast<FactOp>(intVal(lsecond(f))), intVal(lthird(f)) != 0,
                  intVal(lfourth(f)) != 0, value, intVal(list_nth(f, 6)), static_cast<Oid>(intVal(list_nth(f, 7)))};
  }
  return p;
}

bool settle_fact(ColumnFact* fact, Oid type, Datum value) {
  bool integer;
  int64 ivalue = 0;
  double v = 0;
  switch (type) {
    case INT2OID: integer = true; ivalue = DatumGetInt16(value); break;
    case INT4OID: integer = true; ivalue = DatumGetInt32(value); break;
    case INT8OID: integer = true; ivalue = DatumGetInt64(value); break;
    case FLOAT4OID: integer = false; v = DatumGetFloat4(value); break;
    case FLOAT8OID: integer = false; v = DatumGetFloat8(value); break;
    default: return false;
  }
  if (integer != fact->integer) return false;
  if (integer) {
    // Closed bounds on exact doubles: x > c is x >= c + 1.
    if (fact->op == FactOp::Greater) {
      if (ivalue == PG_INT64_MAX) return false;
      ivalue++;
      fact->op = FactOp::GreaterEqual;
    } else if (fact->op == FactOp::Less) {
      if (ivalue == PG_INT64_MIN) return false;
      ivalue--;
      fact->op = FactOp::LessEqual;
    }
    const int64 exact = int64{1} << 53;
    if (ivalue > exact || ivalue < -exact) return false;
    v = static_cast<double>(ivalue);
  } else if (std::isnan(v)) {
    return false;  // NaN sorts above every number: leave such quals out
  }
  fact->value = v;
  return true;
}

}  // namespace flock::pg
