// Reading a sequential scan's heap pages from the batch node (heap_reader.hpp). The page loop is
// heapgettup_pagemode's (PostgreSQL 15, forward only): the same start block (synchronized scans),
// the same wrap-around, the same parallel block allocation, and heapgetpage for each page.
#include "pg.hpp"  // must come first

extern "C" {
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/syncscan.h"
#include "access/tableam.h"
#include "executor/instrument.h"
#include "executor/tuptable.h"
#include "storage/bufmgr.h"
#include "storage/bufpage.h"
}
#undef flock

#include <algorithm>

#include "heap_reader.hpp"

namespace flock::pg {

struct HeapReader {
  SeqScanState* scan_node;
  Relation rel;
  int* columns;  // per column of the child's rows, its table column (0-based); nullptr: the same
  HeapScanDesc scan;  // the child's scan descriptor, from the first read on (scan_of)
  bool started;
  bool finished;
  BlockNumber page;
  int next;  // index into the page's rs_vistuples
  HeapTupleData tuple;
};

HeapReader* heap_reader(PlanState* child) {
  if (!child || !IsA(child, SeqScanState)) return nullptr;
  auto* node = reinterpret_cast<SeqScanState*>(child);
  Relation rel = node->ss.ss_currentRelation;
  EState* estate = child->state;
  // A qual would have to run per row; an EvalPlanQual recheck returns its test tuple from the
  // scan node itself; another table access method has other pages.
  if (child->qual || estate->es_epq_active || !rel || rel->rd_tableam != GetHeapamTableAmRoutine() ||
      !IsMVCCSnapshot(estate->es_snapshot))
    return nullptr;
  // A projection is taken only when it picks table columns and constants (the scan's exact target
  // list below a custom scan): then the child's column j is table column columns[j], or -1.
  int* columns = nullptr;
  if (child->ps_ProjInfo) {
    List* tlist = child->plan->targetlist;
    columns = static_cast<int*>(palloc(sizeof(int) * std::max(list_length(tlist), 1)));
    const Index scanrelid = reinterpret_cast<Scan*>(child->plan)->scanrelid;
    int j = 0;
    ListCell* lc;
    foreach (lc, tlist) {
      Expr* expr = reinterpret_cast<TargetEntry*>(lfirst(lc))->expr;
      if (IsA(expr, Const)) {  // a placeholder (the batch plan's NULL for a row it reads from columns)
        columns[j++] = -1;
        continue;
      }
      if (!IsA(expr, Var)) return nullptr;
      Var* var = reinterpret_cast<Var*>(expr);
      if (var->varno != static_cast<int>(scanrelid) || var->varattno <= 0 || var->varlevelsup != 0 ||
          var->varattno > RelationGetDescr(rel)->natts)
        return nullptr;  // a whole row, a system column
      columns[j++] = var->varattno - 1;
    }
  }
  auto* reader = static_cast<HeapReader*>(palloc0(sizeof(HeapReader)));
  reader->scan_node = node;
  reader->rel = rel;
  reader->columns = columns;
  return reader;
}

namespace {

// The child's scan descriptor: the parallel one it was given, else one made as SeqNext makes it.
// The child keeps it until its end (a rescan reuses it), so it is looked up once.
HeapScanDesc scan_of(HeapReader* reader) {
  if (reader->scan) return reader->scan;
  SeqScanState* node = reader->scan_node;
  if (!node->ss.ss_currentScanDesc)
    node->ss.ss_currentScanDesc = table_beginscan(reader->rel, node->ss.ps.state->es_snapshot, 0, nullptr);
  // heapgetpage lists a page's visible tuples only in page mode, which an MVCC snapshot (checked
  // in heap_reader) always gets: never read a page as empty.
  if (!(node->ss.ss_currentScanDesc->rs_flags & SO_ALLOW_PAGEMODE))
    elog(ERROR, "flock: the sequential scan of \"%s\" is not in page mode", RelationGetRelationName(reader->rel));
  reader->scan = reinterpret_cast<HeapScanDesc>(node->ss.ss_currentScanDesc);
  return reader->scan;
}

// The first page, or the one after reader->page; false when the scan is over.
bool next_page(HeapReader* reader, HeapScanDesc scan) {
  ParallelBlockTableScanDesc pbscan = reinterpret_cast<ParallelBlockTableScanDesc>(scan->rs_base.rs_parallel);
  BlockNumber page;
  if (!reader->started) {
    reader->started = true;
    if (scan->rs_nblocks == 0 || scan->rs_numblocks == 0) return false;
    if (pbscan) {
      table_block_parallelscan_startblock_init(reader->rel, scan->rs_parallelworkerdata, pbscan);
      page = table_block_parallelscan_nextpage(reader->rel, scan->rs_parallelworkerdata, pbscan);
      if (page == InvalidBlockNumber) return false;
    } else {
      page = scan->rs_startblock;
    }
  } else if (pbscan) {
    page = table_block_parallelscan_nextpage(reader->rel, scan->rs_parallelworkerdata, pbscan);
    if (page == InvalidBlockNumber) return false;
  } else {
    page = reader->page + 1;
    if (page >= scan->rs_nblocks) page = 0;
    bool finished = page == scan->rs_startblock ||
                    (scan->rs_numblocks != InvalidBlockNumber && --scan->rs_numblocks == 0);
    // Where this scan is, for the synchronized scans that start after it (as heapgettup_pagemode).
    if (scan->rs_base.rs_flags & SO_ALLOW_SYNC) ss_report_location(reader->rel, page);
    if (finished) return false;
  }
  reader->page = page;
  Instrumentation* instr = reader->scan_node->ss.ps.instrument;  // EXPLAIN ANALYZE: the scan's own
  if (instr) InstrStartNode(instr);
  heapgetpage(&scan->rs_base, page);
  if (instr) InstrStopNode(instr, scan->rs_ntuples);
  reader->next = 0;
  return true;
}

}  // namespace

HeapTuple heap_reader_next(HeapReader* reader) {
  if (reader->finished) return nullptr;
  HeapScanDesc scan = scan_of(reader);
  while (!reader->started || reader->next >= scan->rs_ntuples) {
    CHECK_FOR_INTERRUPTS();
    if (!next_page(reader, scan)) {
      if (BufferIsValid(scan->rs_cbuf)) ReleaseBuffer(scan->rs_cbuf);
      scan->rs_cbuf = InvalidBuffer;
      scan->rs_cblock = InvalidBlockNumber;
      reader->finished = true;
      return nullptr;
    }
  }
  Page dp = BufferGetPage(scan->rs_cbuf);
  OffsetNumber off = scan->rs_vistuples[reader->next++];
  ItemId lp = PageGetItemId(dp, off);
  HeapTuple tuple = &reader->tuple;
  tuple->t_data = reinterpret_cast<HeapTupleHeader>(PageGetItem(dp, lp));
  tuple->t_len = ItemIdGetLength(lp);
  tuple->t_tableOid = RelationGetRelid(reader->rel);
  ItemPointerSet(&tuple->t_self, reader->page, off);
  return tuple;
}

TupleDesc heap_reader_desc(const HeapReader* reader) { return RelationGetDescr(reader->rel); }

const int* heap_reader_columns(const HeapReader* reader) { return reader->columns; }

TupleTableSlot* heap_reader_row(HeapReader* reader, HeapTuple tuple) {
  ScanState* ss = &reader->scan_node->ss;
  TupleTableSlot* slot = ss->ss_ScanTupleSlot;
  ExecStoreBufferHeapTuple(tuple, slot, reader->scan->rs_cbuf);  // the tuple's page, pinned
  if (!ss->ps.ps_ProjInfo) return slot;
  ExprContext* econtext = ss->ps.ps_ExprContext;  // as ExecScan projects
  ResetExprContext(econtext);
  econtext->ecxt_scantuple = slot;
  return ExecProject(ss->ps.ps_ProjInfo);
}

void heap_reader_restart(HeapReader* reader) {
  reader->started = false;
  reader->finished = false;
  reader->next = 0;
}

}  // namespace flock::pg
