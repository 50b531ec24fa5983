// Content hashes of data set snapshots (README "Data sets: the content hash"), definition "binary":
// each row hashed in PostgreSQL's binary COPY form, the row hashes sorted and hashed 8192 at a
// time. Plain C style (PostgreSQL errors may unwind callers).
#pragma once

#include "pg.hpp"  // must come first

namespace flock::pg {

// Can every column of `desc` be hashed by the binary definition? (A send function, and no type
// OID of a user-defined type inside the send form: not composite, not an array of such.)
bool binary_hashable(TupleDesc desc);

// Collects the binary row hashes of one relation or query result. The client encoding must be
// UTF8 while rows are added (binary_hash_pin_encoding).
struct BinaryHasher;
BinaryHasher* binary_hasher_begin(TupleDesc desc);
void binary_hasher_add(BinaryHasher* hasher, const Datum* values, const bool* nulls);
int64 binary_hasher_rows(const BinaryHasher* hasher);
// The sorted row hashes' chunk hashes, concatenated (what sha256() is taken over); ends the hasher.
bytea* binary_hasher_finish(BinaryHasher* hasher);

// Sets client_encoding to UTF8 at a new GUC nest level when it is not already: text-like send
// functions convert to the client encoding. Returns the nest level to close with AtEOXact_GUC, or
// -1 when nothing was set.
int binary_hash_pin_encoding();
void binary_hash_unpin_encoding(int nest);

// Runs `sql` (SPI connected, as the current user) and writes its rows into the new, empty table
// `relid` (a bulk insert, as CREATE TABLE AS does) while hashing them; returns the chunk hashes
// and the row count. The table's columns must be those of the result.
bytea* snapshot_write(const char* sql, Oid relid, int64* rows);

}  // namespace flock::pg
