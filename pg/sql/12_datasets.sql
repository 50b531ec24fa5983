-- Flock data sets: a query's result frozen as an immutable snapshot, and checking it later.

-- ---------------------------------------------------------------------------------------------
-- Data set snapshots: a query's result frozen as table flock_data."name@N", with its row count,
-- columns and an order-independent content hash.
-- ---------------------------------------------------------------------------------------------
CREATE SCHEMA flock_data;
COMMENT ON SCHEMA flock_data IS 'immutable data set snapshots taken by flock.snapshot_dataset, one table per version';
GRANT USAGE ON SCHEMA flock_data TO PUBLIC;

CREATE TABLE flock.datasets (
  name         text        NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$'),
  version      integer     NOT NULL CHECK (version > 0),
  table_name   text        NOT NULL,       -- flock_data."name@N"
  query        text        NOT NULL,
  search_path  text        NOT NULL,       -- the search_path the query ran with (and is re-run with)
  sources      text[]      NOT NULL DEFAULT '{}',  -- tables and views the query read
  row_count    bigint      NOT NULL,
  columns      jsonb       NOT NULL,       -- [{"name": ..., "type": ...}] in column order
  content_hash text        NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
  -- The definition content_hash follows (README "Data sets: the content hash"): 'binary' for new
  -- snapshots, 'text' for those taken before it existed (the default, so restored rows keep theirs)
  -- and for columns the binary form cannot hash portably.
  hash_method  text        NOT NULL DEFAULT 'text' CHECK (hash_method IN ('text', 'binary')),
  run_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
  created_by   name        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  description  text,
  PRIMARY KEY (name, version)
);
COMMENT ON TABLE flock.datasets IS 'data set snapshots (immutable): name@version, where the rows are, and their hash';
SELECT pg_catalog.pg_extension_config_dump('flock.datasets', '');
ALTER TABLE flock.datasets ENABLE ROW LEVEL SECURITY;
-- Visible to the roles that may read the snapshot's table.
CREATE POLICY datasets_visible ON flock.datasets FOR SELECT
  USING (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'SELECT'));
REVOKE ALL ON flock.datasets FROM PUBLIC;
GRANT SELECT ON flock.datasets TO PUBLIC;

CREATE FUNCTION flock._forbid_dataset_change() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'data set % is immutable', TG_TABLE_NAME USING ERRCODE = 'object_not_in_prerequisite_state',
    HINT = 'Take a new version with flock.snapshot_dataset.';
END $$;

-- Row count, columns and content hash of a table, definition 'text'. The hash is
--   sha256( columns::text || E'\n' || row_count || H )
-- where H is sha256 over the concatenated chunk hashes of the sorted per-row hashes
-- sha256(convert_to(row::text, 'UTF8')) taken 8192 at a time: independent of row order, sensitive
-- to every value, to duplicates and to the column names and types. Type output is pinned (UTC,
-- ISO dates, shortest exact floats) so the hash does not depend on session settings.
-- This is the definition in SQL; flock._table_hash (pg/sql/14_train.sql), what every caller uses,
-- computes the same hash in C where it may and falls back to this one. Definition 'binary' (the
-- default since) differs only in the row hashes: sha256 of the row's binary COPY form (C only,
-- pg/src/train_hash.cpp; README "Data sets: the content hash").
-- The columns part of the content hash: [{"name": ..., "type": ...}] in column order.
CREATE FUNCTION flock._table_columns(rel regclass) RETURNS jsonb
LANGUAGE sql STABLE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                            ORDER BY a.attnum), '[]'::jsonb)
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
$$;

CREATE FUNCTION flock._table_hash_sql(rel regclass, OUT row_count bigint, OUT columns jsonb, OUT content_hash text)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD'
SET "IntervalStyle" = 'postgres' SET extra_float_digits = '1' SET bytea_output = 'hex' AS $$
DECLARE
  chunks bytea;
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                            ORDER BY a.attnum), '[]'::jsonb)
    INTO columns
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
  EXECUTE format($q$
    WITH r AS (SELECT sha256(convert_to(t::text, 'UTF8')) AS h FROM %s t),
         s AS (SELECT h, (row_number() OVER (ORDER BY h) - 1) / 8192 AS chunk FROM r),
         c AS (SELECT chunk, count(*) AS n, sha256(string_agg(h, ''::bytea ORDER BY h)) AS ch FROM s GROUP BY chunk)
    SELECT coalesce(sum(n), 0)::bigint, string_agg(ch, ''::bytea ORDER BY chunk) FROM c $q$, rel)
    INTO row_count, chunks;
  content_hash := encode(sha256(convert_to(columns::text || E'\n' || row_count, 'UTF8') || sha256(coalesce(chunks, ''::bytea))), 'hex');
END $$;

-- The catalog row of a data set reference 'name' (latest) or 'name@N', as the calling role sees it.
CREATE FUNCTION flock._resolve_dataset(ref text) RETURNS flock.datasets
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ds_name text := split_part(ref, '@', 1);
  tag text;
  result flock.datasets;
BEGIN
  IF ref IS NULL THEN
    RAISE EXCEPTION 'data set reference is NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF strpos(ref, '@') > 0 THEN
    tag := substr(ref, length(ds_name) + 2);
    IF tag !~ '^[0-9]{1,9}$' THEN
      RAISE EXCEPTION 'invalid data set reference "%"', ref USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Use ''name'' for the latest version or ''name@N'' for version N.';
    END IF;
    SELECT * INTO result FROM flock.datasets d WHERE d.name = ds_name AND d.version = tag::integer;
  ELSE
    SELECT * INTO result FROM flock.datasets d WHERE d.name = ds_name ORDER BY d.version DESC LIMIT 1;
  END IF;
  IF FOUND THEN
    RETURN result;
  END IF;
  IF EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = ds_name) THEN
    RAISE EXCEPTION 'data set "%" has no version %', ds_name, tag USING ERRCODE = 'undefined_object',
      HINT = format('Versions of "%s" you can read: %s.', ds_name,
                    (SELECT string_agg(d.version::text, ', ' ORDER BY d.version) FROM flock.datasets d WHERE d.name = ds_name));
  END IF;
  IF flock._sees_all(current_user) THEN
    RAISE EXCEPTION 'data set "%" does not exist', ds_name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT name, version FROM flock.datasets; take one with flock.snapshot_dataset.';
  END IF;
  RAISE EXCEPTION 'permission denied for data set "%"', ds_name USING ERRCODE = 'insufficient_privilege',
    DETAIL = 'Either the data set does not exist or you may not read it; the two cases give the same error.',
    HINT = 'A data set is readable by the role that took it and the roles it granted SELECT on its table to.';
END $$;

-- The next version of data set `name` for `caller`, under a transaction lock on the name; 42501
-- when another role's data set has the name. Called by the SECURITY DEFINER functions that store
-- snapshots (it runs with their rights).
CREATE FUNCTION flock._next_dataset_version(name text, caller name) RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('flock.datasets'), hashtext(name));
  IF EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = _next_dataset_version.name)
     AND NOT flock._sees_all(caller)
     AND NOT EXISTS (SELECT 1 FROM flock.datasets d JOIN pg_roles c ON c.rolname = d.created_by
                      WHERE d.name = _next_dataset_version.name AND pg_has_role(caller, c.oid, 'USAGE')) THEN
    RAISE EXCEPTION 'permission denied to add a version to data set "%"', name USING ERRCODE = 'insufficient_privilege',
      HINT = 'The name is taken by another role''s data set; choose another name.';
  END IF;
  RETURN (SELECT coalesce(max(d.version), 0) + 1 FROM flock.datasets d WHERE d.name = _next_dataset_version.name);
END $$;
REVOKE ALL ON FUNCTION flock._next_dataset_version(text, name) FROM PUBLIC;

-- Raises 42501 unless `rel` is a temporary relation of kind `kind` ('r' a table, 'v' a view) in
-- the session's own temporary schema, owned by a role `caller` may act as: what the snapshot
-- functions store or copy from is what the caller's own query filled.
CREATE FUNCTION flock._check_snapshot_relation(rel regclass, kind "char", caller name) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_class c
                  WHERE c.oid = rel AND c.relkind = kind AND c.relpersistence = 't'
                    AND c.relnamespace = pg_my_temp_schema() AND pg_has_role(caller, c.relowner, 'USAGE')) THEN
    RAISE EXCEPTION 'relation % is not a temporary % of yours', rel, CASE kind WHEN 'v' THEN 'view' ELSE 'table' END
      USING ERRCODE = 'insufficient_privilege', HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock._check_snapshot_relation(regclass, "char", name) FROM PUBLIC;

-- Raises 42501 unless `caller` may read every source a snapshot records (temporary relations
-- aside). Checked after the query ran as the caller, which raised PostgreSQL's own error for a
-- table the caller may not read: the recorded sources are what it read.
CREATE FUNCTION flock._check_snapshot_sources(sources text[], caller name) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM unnest(sources) AS src
              WHERE src NOT LIKE 'pg\_temp.%'
                AND NOT coalesce(has_any_column_privilege(caller, to_regclass(src), 'SELECT'), false)) THEN
    RAISE EXCEPTION 'invalid snapshot sources' USING ERRCODE = 'insufficient_privilege',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock._check_snapshot_sources(text[], name) FROM PUBLIC;

-- A data set version's new table `qualified` ('name@N' = `relname`) made immutable and readable
-- by `caller` alone (who may grant it on).
CREATE FUNCTION flock._seal_dataset_table(qualified text, relname text, caller name) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  EXECUTE format('CREATE TRIGGER immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION flock._forbid_dataset_change()', qualified);
  EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', qualified);
  EXECUTE format('GRANT SELECT ON %s TO %I WITH GRANT OPTION', qualified, caller);
  EXECUTE format('COMMENT ON TABLE %s IS %L', qualified, format('flock data set %s (immutable snapshot)', relname));
END $$;
REVOKE ALL ON FUNCTION flock._seal_dataset_table(text, text, name) FROM PUBLIC;

-- Stores the caller's temp table `tmp` (holding the query result) as the next version of data set
-- `name`, recording the query, search_path and sources it was filled with. Called only by
-- flock.snapshot_dataset (C), which has just run that query as the caller into `tmp`: not
-- executable by PUBLIC, so recorded provenance is what actually ran. It reads nothing but that
-- table, so it gives no access beyond the caller's own.
CREATE FUNCTION flock._store_snapshot(name text, query text, search_path text, description text, tmp regclass,
                                      sources text[]) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  next_version integer;
  relname text;
  qualified text;
  h record;
  privacy jsonb;
BEGIN
  PERFORM flock._check_snapshot_relation(tmp, 'r', caller);
  IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' OR coalesce(query, '') = '' THEN
    RAISE EXCEPTION 'invalid snapshot' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  PERFORM flock._check_snapshot_sources(sources, caller);
  next_version := flock._next_dataset_version(name, caller);
  relname := name || '@' || next_version;
  qualified := format('flock_data.%I', relname);
  -- The copy, with the personal-data marks of the columns it came from applied (50_privacy.sql).
  privacy := flock._privacy_copy_snapshot(tmp, sources, qualified);
  PERFORM flock._seal_dataset_table(qualified, relname, caller);
  -- The definition the query's own columns allow, so that verify_dataset's source check (and the
  -- hash before personal-data marks) use the same one.
  SELECT * INTO h FROM flock._table_hash(qualified::regclass,
                                         CASE WHEN flock._binary_hashable(tmp) THEN 'binary' ELSE 'text' END);
  INSERT INTO flock.datasets (name, version, table_name, query, search_path, sources, row_count, columns,
                              content_hash, hash_method, created_by, description)
  VALUES (name, next_version, qualified, query, coalesce(search_path, ''), coalesce(sources, '{}'), h.row_count,
          h.columns, h.content_hash, h.hash_method, caller, description);
  PERFORM flock._privacy_record_snapshot(name, next_version, privacy);
  RETURN relname;
END $$;
REVOKE ALL ON FUNCTION flock._store_snapshot(text, text, text, text, regclass, text[]) FROM PUBLIC;

-- The tables, views and foreign tables a view reads (its rewrite rule's dependencies).
CREATE FUNCTION flock._view_sources(view_oid regclass) RETURNS text[]
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(array_agg(DISTINCT format('%s.%I', CASE WHEN n.nspname LIKE 'pg\_temp%' THEN 'pg_temp'
                                                          ELSE quote_ident(n.nspname) END, c.relname)), '{}')
    FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class c ON c.oid = d.refobjid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE r.ev_class = view_oid AND d.refobjid <> view_oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
$$;

-- Runs `query` as the calling role, with search_path `path`, into a temp table; returns the temp
-- table and the tables the query reads (from a temp view's dependencies). Only the query itself
-- resolves names with `path`; the rest of the function keeps its pinned search_path.
CREATE FUNCTION flock._run_into_temp(query text, path text, OUT tmp regclass, OUT sources text[])
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  base text := 'flock_snapshot_' || replace(gen_random_uuid()::text, '-', '');
  v regclass;
BEGIN
  -- The query's names are resolved once, when its view is made with `path`.
  SELECT s.view, s.sources INTO v, sources FROM flock._snapshot_view(query, path) s;
  EXECUTE format('CREATE TEMP TABLE %I AS SELECT * FROM %s', base, v);
  tmp := format('pg_temp.%I', base)::regclass;
  EXECUTE format('DROP VIEW %s', v);
END $$;

-- The one-copy path of flock.snapshot_dataset (C): the query as a temporary view of the caller's,
-- created with the caller's search_path `path`; returns it and the tables it reads. The C code
-- then runs SELECT * FROM it as the caller, writing and hashing the rows in one pass.
CREATE FUNCTION flock._snapshot_view(query text, path text, OUT view regclass, OUT sources text[])
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  base text := 'flock_snapshot_' || replace(gen_random_uuid()::text, '-', '');
  body text;
BEGIN
  body := regexp_replace(query, '[\s;]+$', '');
  IF body IS NULL OR body = '' THEN
    RAISE EXCEPTION 'query must not be empty' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF path IS NULL THEN
    RAISE EXCEPTION 'search_path must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM set_config('search_path', path, true);
  EXECUTE format(E'CREATE TEMP VIEW %I AS SELECT * FROM (%s\n) AS snapshot', base, body);
  PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
  view := format('pg_temp.%I', base)::regclass;
  sources := flock._view_sources(view);
END $$;

-- First half of the one-copy path: checks and numbers the next version of data set `name` as
-- _store_snapshot does, creates its empty table with the columns of the caller's temporary view
-- `view` (from flock._snapshot_view) and returns the table's name 'name@N'. NULL when the rows need
-- the general path: personal-data marks apply to a column (their condition is
-- _privacy_copy_snapshot's, 50_privacy.sql), or a column the binary hash cannot take. Called only
-- by flock.snapshot_dataset (C), which then fills the table and calls _finish_snapshot.
CREATE FUNCTION flock._begin_snapshot(name text, view regclass, sources text[]) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  next_version integer;
  relname text;
  qualified text;
BEGIN
  PERFORM flock._check_snapshot_relation(view, 'v', caller);
  IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' THEN
    RAISE EXCEPTION 'invalid snapshot' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  IF NOT flock._binary_hashable(view)
     OR EXISTS (SELECT 1 FROM pg_attribute a JOIN flock.privacy_marks m ON m.column_name = a.attname
                 WHERE a.attrelid = view AND a.attnum > 0 AND NOT a.attisdropped AND m.action <> 'keep'
                   AND m.table_oid IN (SELECT * FROM flock._privacy_source_tables(sources))) THEN
    RETURN NULL;
  END IF;
  next_version := flock._next_dataset_version(name, caller);
  relname := name || '@' || next_version;
  qualified := format('flock_data.%I', relname);
  EXECUTE format('CREATE TABLE %s (LIKE %s)', qualified, view);
  PERFORM flock._seal_dataset_table(qualified, relname, caller);
  RETURN relname;
END $$;
REVOKE ALL ON FUNCTION flock._begin_snapshot(text, regclass, text[]) FROM PUBLIC;

-- Second half: records version `relname` of data set `name`, whose table flock.snapshot_dataset
-- (C) has just filled with the query's rows, with their row count and the binary definition's
-- chunk hashes it computed while writing them.
CREATE FUNCTION flock._finish_snapshot(name text, relname text, query text, search_path text, description text,
                                       sources text[], row_count bigint, chunks bytea) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  qualified text := format('flock_data.%I', relname);
  columns jsonb := flock._table_columns(qualified::regclass);
BEGIN
  IF relname IS DISTINCT FROM name || '@' || substring(relname FROM '@([0-9]+)$') OR coalesce(query, '') = ''
     OR row_count IS NULL OR chunks IS NULL THEN
    RAISE EXCEPTION 'invalid snapshot' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  PERFORM flock._check_snapshot_sources(sources, caller);
  INSERT INTO flock.datasets (name, version, table_name, query, search_path, sources, row_count, columns,
                              content_hash, hash_method, created_by, description)
  VALUES (name, substring(relname FROM '@([0-9]+)$')::integer, qualified, query, coalesce(search_path, ''),
          coalesce(sources, '{}'), row_count, columns,
          encode(sha256(convert_to(columns::text || E'\n' || row_count, 'UTF8') || sha256(chunks)), 'hex'), 'binary',
          caller, description);
  RETURN relname;
END $$;
REVOKE ALL ON FUNCTION flock._finish_snapshot(text, text, text, text, text, text[], bigint, bytea) FROM PUBLIC;

CREATE FUNCTION flock._check_dataset_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'data set name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' THEN
    RAISE EXCEPTION 'invalid data set name "%"', name USING ERRCODE = 'invalid_name',
      HINT = 'A data set name starts with a letter or underscore and has up to 50 letters, digits, _ . or -.';
  END IF;
END $$;

-- Runs the query as current_user with its search_path (flock._run_into_temp), then stores the
-- result with that query, search_path and the sources read (flock._store_snapshot, for current_user).
CREATE FUNCTION flock.snapshot_dataset(name text, query text, description text DEFAULT NULL) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_snapshot_dataset' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.snapshot_dataset(text, text, text) IS
  'runs query as the caller and freezes its result as the next version of data set name; returns ''name@version''';

-- May current_user act as `role` (a superuser, or a member of it)? False for a role that is gone.
CREATE FUNCTION flock._may_act_as(role name) RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_may_act_as' LANGUAGE C STABLE STRICT PARALLEL UNSAFE;

-- Runs data set name@version's recorded query again as the role that recorded it (created_by),
-- inside a security-restricted operation, with its recorded search_path (pg_temp last unless it
-- names pg_temp), and hashes the result as flock._table_hash does. For roles that may act as the
-- author only (42501 otherwise); the data set is read as the calling role.
CREATE FUNCTION flock._source_hash(name text, version integer,
                                   OUT row_count bigint, OUT columns jsonb, OUT content_hash text)
  AS 'MODULE_PATHNAME', 'flock_source_hash' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION flock.verify_dataset_report(ref text, check_source boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d flock.datasets;
  stored record;
  source record;
  stored_json jsonb;
  source_json jsonb := NULL;
  reason text;
  erasures jsonb;
  expected_hash text;
  expected_rows bigint;
  raw_hash text;
  raw_rows bigint;
BEGIN
  d := flock._resolve_dataset(ref);
  -- Rows erased by flock.erase_subject change the stored hash: the stored rows must then hash to
  -- what the latest recorded erasure left (50_privacy.sql), and the report says so.
  SELECT coalesce(jsonb_agg(jsonb_build_object('erasure', e.erasure, 'rows_removed', e.rows_removed,
                                               'erased_by', e.erased_by, 'erased_at', e.erased_at) ORDER BY e.erasure), '[]'),
         (array_agg(e.content_hash ORDER BY e.erasure DESC))[1], (array_agg(e.row_count ORDER BY e.erasure DESC))[1]
    INTO erasures, expected_hash, expected_rows
    FROM flock.dataset_erasures e WHERE e.name = d.name AND e.version = d.version;
  expected_hash := coalesce(expected_hash, d.content_hash);
  expected_rows := coalesce(expected_rows, d.row_count);
  -- A snapshot with personal-data marks applied: its query re-run gives the rows before the marks.
  SELECT p.raw_content_hash, p.raw_row_count INTO raw_hash, raw_rows
    FROM flock.dataset_privacy p WHERE p.name = d.name AND p.version = d.version;
  BEGIN
    SELECT * INTO stored FROM flock._table_hash(d.table_name::regclass, d.hash_method);
    stored_json := jsonb_build_object('ok', stored.content_hash = expected_hash AND stored.row_count = expected_rows,
                                      'row_count', stored.row_count, 'content_hash', stored.content_hash);
    IF jsonb_array_length(erasures) > 0 THEN
      stored_json := stored_json || jsonb_build_object('changed_by_erasure', erasures);
    END IF;
  EXCEPTION WHEN undefined_table THEN
    stored_json := jsonb_build_object('ok', false, 'error', format('table %s is missing', d.table_name));
  END;
  IF check_source THEN
    -- The recorded query runs only as its author: a verifier who may not act as that role gets
    -- the stored-hash check alone, and is told so.
    IF NOT flock._may_act_as(d.created_by) THEN
      reason := CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = d.created_by)
                     THEN format('its author, role %I, no longer exists', d.created_by)
                     ELSE format('it runs only as its author %I, and %I is neither a superuser nor a member of %I',
                                 d.created_by, current_user, d.created_by) END;
      RAISE NOTICE 'the query of data set %@% was not run again: %', d.name, d.version, reason
        USING HINT = 'Only the stored rows were checked against the recorded hash. The author, a member of that role '
                     'or a superuser can check the source too.';
      source_json := jsonb_build_object('ok', NULL, 'checked', false, 'reason', reason);
    ELSE
      BEGIN
        SELECT * INTO source FROM flock._source_hash(d.name, d.version);
        source_json := jsonb_build_object('ok', source.content_hash = coalesce(raw_hash, d.content_hash)
                                                AND source.row_count = coalesce(raw_rows, d.row_count),
                                          'row_count', source.row_count, 'content_hash', source.content_hash,
                                          'run_as', d.created_by);
        IF raw_hash IS NOT NULL THEN
          source_json := source_json || jsonb_build_object('compared_before_privacy_marks', true);
        END IF;
        -- After an erasure the source may have lost the subject too: then it gives what the
        -- erasure left; with marks applied that hash is unknown (only the marked rows are kept).
        IF NOT (source_json->>'ok')::boolean AND jsonb_array_length(erasures) > 0 THEN
          IF raw_hash IS NULL AND source.content_hash = expected_hash AND source.row_count = expected_rows THEN
            source_json := source_json || jsonb_build_object('ok', true, 'changed_by_erasure', true);
          ELSIF raw_hash IS NOT NULL THEN
            source_json := source_json || jsonb_build_object('ok', NULL, 'changed_by_erasure', true,
              'reason', 'rows were erased from a snapshot stored with personal-data marks: its source no longer compares');
          END IF;
        END IF;
      EXCEPTION WHEN OTHERS THEN
        source_json := jsonb_build_object('ok', false, 'error', SQLERRM, 'sqlstate', SQLSTATE, 'run_as', d.created_by);
      END;
    END IF;
  END IF;
  RETURN jsonb_build_object('ref', d.name || '@' || d.version, 'row_count', d.row_count, 'content_hash', d.content_hash,
                            'stored', stored_json, 'source', source_json,
                            'ok', (stored_json->>'ok')::boolean AND coalesce((source_json->>'ok')::boolean, true))
         || CASE WHEN jsonb_array_length(erasures) > 0 THEN jsonb_build_object('erasures', erasures) ELSE '{}' END;
END $$;
COMMENT ON FUNCTION flock.verify_dataset_report(text, boolean) IS
  're-hashes a snapshot (and, with check_source, the result of its query run again now as its author) against the recorded hash';

CREATE FUNCTION flock.verify_dataset(ref text, check_source boolean DEFAULT true) RETURNS boolean
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT (flock.verify_dataset_report(ref, check_source)->>'ok')::boolean
$$;
COMMENT ON FUNCTION flock.verify_dataset(text, boolean) IS
  'true when the snapshot still hashes to its recorded hash (and, with check_source, its query still gives the same data)';

CREATE FUNCTION flock._drop_dataset(name text, version integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  d record;
  users text;
  n integer := 0;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.datasets x WHERE x.name = _drop_dataset.name
                 AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version)
                 AND (flock._sees_all(caller) OR has_table_privilege(caller, to_regclass(x.table_name), 'SELECT'))) THEN
    IF flock._sees_all(caller) THEN
      RAISE EXCEPTION 'data set "%" does not exist', name || coalesce('@' || version, '') USING ERRCODE = 'undefined_object',
        HINT = 'See SELECT name, version FROM flock.datasets.';
    END IF;
    RAISE EXCEPTION 'permission denied for data set "%"', name || coalesce('@' || version, '')
      USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'Either the data set does not exist or you may not read it; the two cases give the same error.';
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = caller) AND EXISTS (
       SELECT 1 FROM flock.datasets x WHERE x.name = _drop_dataset.name
          AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version) AND x.created_by <> caller) THEN
    RAISE EXCEPTION 'permission denied to drop data set "%"', name || coalesce('@' || version, '')
      USING ERRCODE = 'insufficient_privilege', HINT = 'Only the role that took a snapshot, or a superuser, may drop it.';
  END IF;
  SELECT string_agg(DISTINCT format('%s@%s', r.model_name, r.model_version), ', ') INTO users
    FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id
   WHERE i.dataset_name = _drop_dataset.name AND (_drop_dataset.version IS NULL OR i.dataset_version = _drop_dataset.version);
  IF users IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop data set "%": models were trained on it', name || coalesce('@' || version, '')
      USING ERRCODE = 'dependent_objects_still_exist', DETAIL = format('Trained on it: %s.', users),
            HINT = 'Drop those model versions first; their training records go with them.';
  END IF;
  FOR d IN SELECT * FROM flock.datasets x WHERE x.name = _drop_dataset.name
             AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version) LOOP
    EXECUTE format('DROP TABLE IF EXISTS %s', d.table_name);
    DELETE FROM flock.datasets x WHERE x.name = d.name AND x.version = d.version;
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION flock._drop_dataset(text, integer) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._drop_dataset.
CREATE FUNCTION flock.drop_dataset(name text, version integer DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.drop_dataset(text, integer) IS
  'drops one version of a data set, or all; only its creator or a superuser, and not while a model records training on it';
