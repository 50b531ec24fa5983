// Reading a sequential scan's heap pages straight from the batch node: the visible tuples of one
// page at a time, as PostgreSQL's own page-mode scan finds them (heapgetpage: visibility, page
// pruning, serializable conflicts), without the per-row executor calls of the scan node (its
// ExecProcNode, slot store and buffer-pin bookkeeping). Used by batch_exec.cpp when its child is a
// plain sequential scan of a heap table: no quals, no projection but of table columns, no
// EvalPlanQual.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "executor/execdesc.h"
#include "nodes/execnodes.h"
#include "storage/buf.h"
}
#undef flock

namespace flock::pg {

struct HeapReader;

// A reader of `child`'s pages, or nullptr when `child` is anything but a plain sequential scan of a
// heap table (one that projects only picks columns) (its rows then come through ExecProcNode). The scan descriptor is the child's own
// (created as SeqNext would, or the parallel one the child was given), so that the child's rescan
// and end handle it.
HeapReader* heap_reader(PlanState* child);

// The next visible tuple, or nullptr past the last. Valid until the next call (its page stays
// pinned until then). Polls for interrupts once a page.
HeapTuple heap_reader_next(HeapReader* reader);

// The descriptor of the tuples, and per column of the child's rows the table column (0-based) it
// is (-1: a constant), or nullptr when the child's rows are the table's.
TupleDesc heap_reader_desc(const HeapReader* reader);
const int* heap_reader_columns(const HeapReader* reader);

// The row the child would have returned for `tuple` (its slot: the scan's, or its projection's).
TupleTableSlot* heap_reader_row(HeapReader* reader, HeapTuple tuple);

// Back to the first page, after the child was rescanned.
void heap_reader_restart(HeapReader* reader);

}  // namespace flock::pg
