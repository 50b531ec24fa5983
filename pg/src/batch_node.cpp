// The one encoder and decoder of the batch node's custom_private (see batch_node.hpp).
#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/pg_list.h"
#include "nodes/value.h"
}
#undef flock

#include <algorithm>

#include "batch_node.hpp"

namespace flock::pg {

List* encode_batch_private(const BatchPrivate& p) {
  List* wants = NIL;
  List* row_columns = NIL;
  for (int k = 0; k < p.ncalls; ++k) {
    wants = lappend(wants, makeInteger(static_cast<int>(p.wants[k])));
    const RowColumns& rc = p.row_columns[k];
    row_columns = lappend(row_columns, list_make3(makeInteger(rc.first), makeInteger(rc.natts),
                                                  makeInteger(static_cast<int>(rc.rowtype))));
  }
  return list_make4(wants, row_columns, p.copied, p.sources);
}

BatchPrivate decode_batch_private(List* custom_private) {
  if (list_length(custom_private) != 4) elog(ERROR, "flock: malformed %s plan node", kBatchNodeName);
  BatchPrivate p;
  List* wants = static_cast<List*>(linitial(custom_private));
  List* row_columns = static_cast<List*>(lsecond(custom_private));
  p.copied = static_cast<List*>(lthird(custom_private));
  p.sources = static_cast<List*>(lfourth(custom_private));
  p.ncalls = list_length(wants);
  p.wants = static_cast<Want*>(palloc(sizeof(Want) * std::max(p.ncalls, 1)));
  p.row_columns = static_cast<RowColumns*>(palloc(sizeof(RowColumns) * std::max(p.ncalls, 1)));
  for (int k = 0; k < p.ncalls; ++k) {
    p.wants[k] = static_cast<Want>(intVal(list_nth(wants, k)));
    List* rc = static_cast<List*>(list_nth(row_columns, k));
    p.row_columns[k] = {intVal(linitial(rc)), intVal(lsecond(rc)), static_cast<Oid>(intVal(lthird(rc)))};
  }
  return p;
}

}  // namespace flock::pg
