// What the planner rewrite (batch_plan.cpp) hands the FlockBatchScore CustomScan (batch_exec.cpp):
// the node's name, its method table, and the layout of CustomScan.custom_private, read and written
// only through encode_batch_private / decode_batch_private.
#pragma once

#include "pg.hpp"  // must come first

extern "C" {
#include "nodes/extensible.h"
}
#undef flock

#include "predict.hpp"

namespace flock::pg {

constexpr const char* kBatchNodeName = "FlockBatchScore";

// Where a call's input row comes from when it is a whole table row ("flock.predict('m', t) FROM t"):
// the table's columns, appended to the batch node's input rows from position `first` on (0: the
// input is evaluated as an expression). Reading features straight from those columns spares
// forming a composite value per row, copying it and taking it apart again.
struct RowColumns {
  int first;
  int natts;
  Oid rowtype;
  // nullptr: column k is table column k + 1 (the table's own row). Else the row is a ROW(...) of
  // the scanned table's columns and NULLs (an input narrowed by optimize_query.cpp) of named row
  // type `rowtype`: per column, the table column (1-based) it holds, or 0 for a NULL.
  int* table_columns = nullptr;
};

// A RowColumns as the List custom_private keeps: (first natts rowtype [table_columns]).
List* encode_row_columns(const RowColumns& rc);
RowColumns decode_row_columns(List* encoded);

// What the scan below the node guarantees about every row it returns (its quals, its index quals,
// the table's validated CHECK constraints, NOT NULL columns and partition constraint), in a form
// the optimizer (optimize_call.cpp) turns into constraints on a model's inputs: `column op value`
// on a numeric table column, or `column IS NOT NULL`. Integer columns' strict comparisons arrive as
// non-strict ones (x > 3 as x >= 4), and their values are exact as doubles.
enum class FactOp : int { Less = 1, LessEqual = 2, Equal = 3, GreaterEqual = 4, Greater = 5, NotNull = 6 };

struct ColumnFact {
  int attno;     // table column (1-based)
  FactOp op;
  bool integer;  // an integer column (else float4 / float8: NaN possible, sorted above numbers)
  bool null_passes;  // a constraint (CHECK, partition bound): it holds for non-NULL values, NULL passes
  double value;  // unused for NotNull and until a parameter's value is known
  int param;        // > 0: the value is that of parameter $param (PARAM_EXTERN), known at executor start
  Oid param_type;   // its type (an integer or float type)
};

// Completes `fact` (attno, op as the btree strategy of `column op value`, integer set) with a
// value of type `type`: integer strict comparisons become non-strict ones, values become doubles.
// False when the fact says nothing usable (another type, NaN, an integer past 2^53...).
bool settle_fact(ColumnFact* fact, Oid type, Datum value);

// CustomScan.custom_private, decoded. custom_exprs holds, per call k, its model constant at 2k and
// its input expression at 2k + 1; after those, for each flock.explain call in order, its
// interactions, background and output arguments (Consts, possibly NULL).
struct BatchPrivate {
  int ncalls;
  Want* wants;              // [ncalls] what each call returns (unused for flock.explain calls)
  bool* explains;           // [ncalls] a flock.explain call (issue 14): jsonb per row
  RowColumns* row_columns;  // [ncalls] where each call's input row comes from
  List* copied;   // Integer: the child columns (1-based) the rows the node returns must carry
  List* sources;  // Integer: scan row column i is table column sources[i] (1-based, 0: NULL), or
                  // NIL: the child's columns as planned
  int nfacts;
  ColumnFact* facts;  // [nfacts] what the child's quals guarantee about its table's columns
};

// How custom_private's wants list marks a flock.explain call (no Want: the core never sees it).
constexpr int kExplainCall = 100;

// custom_private stays a List of Integer nodes so that copyObject and EXPLAIN VERBOSE handle it:
// (wants, ((first natts rowtype) per call), copied, sources, ((attno op integer null_passes value_hi
// value_lo param param_type) per fact)); a fact's double travels as its two 32-bit halves, exactly.
List* encode_batch_private(const BatchPrivate& p);
// Allocates the arrays in CurrentMemoryContext.
BatchPrivate decode_batch_private(List* custom_private);

// The node's method table (batch_exec.cpp), referenced by the plans batch_plan.cpp makes.
extern const CustomScanMethods batch_scan_methods;

}  // namespace flock::pg
