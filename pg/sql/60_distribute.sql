-- ---------------------------------------------------------------------------------------------
-- Scoring on shards (issue 18). PostgreSQL's own machinery places the rows and the catalog: a
-- hash-partitioned table whose partitions are postgres_fdw foreign tables on the shards, and the
-- model catalog replicated coordinator -> shards by logical replication. Flock adds predictions
-- pinned by sha256 (shippable), the setup (flock.add_shard, flock.create_distributed_table) and
-- flock.on_shards, which runs one query on every shard at once (dblink, asynchronously). Design
-- and measurements: docs/distributed.md. The coordinator needs the postgres_fdw and dblink
-- extensions; every node needs wal_level = logical on the coordinator's side only.
-- ---------------------------------------------------------------------------------------------

-- A pinned model: 'name@N#sha256', a version and the sha256 of its bytes. Its own type, not
-- text: postgres_fdw ships a function call only when no collation is involved, and text is
-- collatable. Input checks the form; text's representation.
CREATE TYPE flock.pinned;
CREATE FUNCTION flock.pinned_in(cstring) RETURNS flock.pinned
  AS 'MODULE_PATHNAME', 'flock_pinned_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.pinned_out(flock.pinned) RETURNS cstring AS 'textout' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.pinned_recv(internal) RETURNS flock.pinned AS 'textrecv' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.pinned_send(flock.pinned) RETURNS bytea AS 'textsend' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE flock.pinned (INPUT = flock.pinned_in, OUTPUT = flock.pinned_out, RECEIVE = flock.pinned_recv,
                          SEND = flock.pinned_send, INTERNALLENGTH = VARIABLE, STORAGE = extended);

-- Pinned predictions: flock.predict(ref, input) computed only with the version whose bytes have
-- that sha256 (else an error naming the node). IMMUTABLE on that basis, so postgres_fdw ships them
-- to the shards (server option extensions 'flock').
CREATE FUNCTION flock.predict_pinned(model flock.pinned, input record) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_pinned(model flock.pinned, features float4[]) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_proba_pinned(model flock.pinned, input record) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_proba_pinned(model flock.pinned, features float4[]) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_label_pinned(model flock.pinned, input record) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_label_pinned(model flock.pinned, features float4[]) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label_pinned' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;

-- Whether this node holds the version at all, whoever may use it (the pinned functions then
-- resolve it as the caller: one without the privilege gets flock.predict's error). 'name@N', what
-- flock.pin makes, must be that version with those bytes; another reference (an alias) is
-- resolved afterwards and its bytes compared.
CREATE FUNCTION flock._has_pinned(sha256 text, ref text) RETURNS boolean
LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM flock.models m WHERE m.sha256 = _has_pinned.sha256
                 AND (ref !~ '@[0-9]+$' OR m.name || '@' || m.version = ref))
$$;

-- ref, resolved here and now (as the caller) -> its pinned form.
CREATE FUNCTION flock.pin(ref text) RETURNS flock.pinned
LANGUAGE sql STABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT (r.name || '@' || r.version || '#' || r.sha256)::flock.pinned FROM flock._resolve(ref) r
$$;

-- Raises unless this node holds the pinned version (the error names the node); else true.
CREATE FUNCTION flock.require_pinned(model flock.pinned) RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_require_pinned' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

-- ---------------------------------------------------------------------------------------------
-- The shards, as the coordinator knows them.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.shards (
  name        name        PRIMARY KEY,   -- its postgres_fdw foreign server
  dbname      text        NOT NULL,
  added_by    name        NOT NULL,
  added_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flock.shards IS 'shard servers that hold foreign partitions and a replica of the model catalog';
REVOKE ALL ON flock.shards FROM PUBLIC;
GRANT SELECT ON flock.shards TO PUBLIC;

CREATE FUNCTION flock._require_extensions(names text[]) RETURNS void
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  missing text[] := ARRAY(SELECT n FROM unnest(names) n WHERE NOT EXISTS (SELECT 1 FROM pg_extension e WHERE e.extname = n));
BEGIN
  IF cardinality(missing) > 0 THEN
    RAISE EXCEPTION 'scoring on shards needs the extension(s) %', array_to_string(missing, ', ')
      USING ERRCODE = 'feature_not_supported',
            HINT = format('Run %s on the coordinator.', (SELECT string_agg(format('CREATE EXTENSION %I;', n), ' ') FROM unnest(missing) n));
  END IF;
END $$;

-- The catalog tables every shard replicates (a shard checks access and audit policies itself).
CREATE FUNCTION flock._catalog_tables() RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT 'flock.models, flock.model_grants, flock.aliases, flock.audit_policies'
$$;

-- Runs `sql` on the shard, through dblink over the foreign server's connection (its options and
-- the caller's user mapping); an error names the shard.
CREATE FUNCTION flock._on_shard(shard name, sql text) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  state text; msg text; detail text; hint text;
BEGIN
  PERFORM dblink_exec(flock._shard_dsn(shard), sql);
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RAISE EXCEPTION 'shard "%": %', shard, msg USING ERRCODE = state, DETAIL = detail, HINT = hint;
END $$;

-- The one value `sql` returns on the shard, as text; an error names the shard.
CREATE FUNCTION flock._shard_value(shard name, sql text) RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  result text;
  state text; msg text; detail text; hint text;
BEGIN
  SELECT v INTO result FROM dblink(flock._shard_dsn(shard), sql) AS r(v text);
  RETURN result;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  RAISE EXCEPTION 'shard "%": %', shard, msg USING ERRCODE = state, DETAIL = detail, HINT = hint;
END $$;

-- A libpq connection string for the shard: its foreign server's options and the caller's user
-- mapping (dblink's own server form needs the dblink_fdw wrapper, not postgres_fdw's).
CREATE FUNCTION flock._shard_dsn(shard name) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT string_agg(format('%s=%s', split_part(o, '=', 1), quote_literal(substr(o, strpos(o, '=') + 1))), ' ')
  FROM (SELECT unnest(s.srvoptions) o FROM pg_foreign_server s WHERE s.srvname = shard
        UNION ALL
        SELECT unnest(u.umoptions) FROM pg_user_mappings u
        WHERE u.srvname = shard AND u.usename IN (current_user::text, 'public')) opts
  WHERE split_part(o, '=', 1) IN ('host', 'hostaddr', 'port', 'dbname', 'user', 'password', 'sslmode',
                                  'connect_timeout', 'application_name', 'options')
$$;

-- Adds a shard: its foreign server and the caller's user mapping, flock on it (the same version as
-- here), its node name, and its subscription to the coordinator's catalog publication. A
-- PROCEDURE because the subscription's replication slot on the coordinator can only be made after
-- this transaction commits (logical slots wait for running writers), so call it outside a
-- transaction block. `coordinator` is how the shard reaches this database (a libpq conninfo).
-- (No SET search_path: a procedure with one may not COMMIT. It calls only flock.* and pg_catalog.)
CREATE PROCEDURE flock.add_shard(shard name, host text, port integer, dbname text, coordinator text,
                                 user_name name DEFAULT current_user)
LANGUAGE plpgsql AS $$
DECLARE
  here text := (SELECT extversion FROM pg_extension WHERE extname = 'flock');
  there text;
  models_there bigint;
BEGIN
  PERFORM flock._require_extensions(ARRAY['postgres_fdw', 'dblink']);
  IF EXISTS (SELECT 1 FROM flock.shards s WHERE s.name = shard) THEN
    RAISE EXCEPTION 'shard "%" is already added', shard USING ERRCODE = 'duplicate_object',
      HINT = 'flock.distribution_status() shows the shards.';
  END IF;
  -- Scans of foreign partitions run concurrently (async_capable); flock's IMMUTABLE functions
  -- ship (extensions); rows travel in large batches.
  EXECUTE format('CREATE SERVER %I FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host %L, port %L, dbname %L, '
                 'extensions %L, async_capable %L, fetch_size %L, batch_size %L)',
                 shard, host, port::text, dbname, 'flock', 'true', '10000', '1000');
  EXECUTE format('CREATE USER MAPPING FOR CURRENT_USER SERVER %I OPTIONS (user %L)', shard, user_name);
  INSERT INTO flock.shards (name, dbname, added_by) VALUES (shard, dbname, current_user);
  PERFORM flock._on_shard(shard, 'CREATE EXTENSION IF NOT EXISTS flock');
  there := flock._shard_value(shard, 'SELECT extversion FROM pg_extension WHERE extname = ''flock''');
  IF there IS DISTINCT FROM here THEN
    RAISE EXCEPTION 'shard "%" has flock %, the coordinator %', shard, there, here USING ERRCODE = 'object_not_in_prerequisite_state',
      HINT = 'Install the same flock version on every node.';
  END IF;
  models_there := flock._shard_value(shard, 'SELECT count(*) FROM flock.models')::bigint;
  IF models_there > 0 THEN
    RAISE EXCEPTION 'shard "%" already has % model version(s) of its own', shard, models_there
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'A shard''s model catalog is a replica of the coordinator''s: drop its models (or use a fresh database).';
  END IF;
  PERFORM flock._on_shard(shard, format('ALTER DATABASE %I SET flock.node_name = %L', dbname, shard));
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'flock_catalog') THEN
    EXECUTE 'CREATE PUBLICATION flock_catalog FOR TABLE ' || flock._catalog_tables();
  END IF;
  COMMIT;
  -- The subscription copies the catalog, then follows it. Its slot, on this coordinator, is named
  -- after the shard.
  PERFORM flock._on_shard(shard, format('CREATE SUBSCRIPTION %I CONNECTION %L PUBLICATION flock_catalog '
                                        'WITH (slot_name = %L)',
                                        'flock_catalog', coordinator, 'flock_' || shard));
END $$;
REVOKE ALL ON PROCEDURE flock.add_shard(name, text, integer, text, text, name) FROM PUBLIC;

-- Removes a shard: its subscription (and so its slot here), its foreign server (CASCADE: its
-- foreign partitions and user mappings). A shard that is down keeps its slot here: drop it with
-- pg_drop_replication_slot('flock_' || shard).
CREATE PROCEDURE flock.remove_shard(shard name)
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.shards s WHERE s.name = shard) THEN
    RAISE EXCEPTION 'no shard "%"', shard USING ERRCODE = 'undefined_object';
  END IF;
  PERFORM flock._on_shard(shard, 'DROP SUBSCRIPTION IF EXISTS flock_catalog');
  EXECUTE format('DROP SERVER %I CASCADE', shard);
  DELETE FROM flock.shards s WHERE s.name = shard;
END $$;
REVOKE ALL ON PROCEDURE flock.remove_shard(name) FROM PUBLIC;

-- Creates `name` (columns as in CREATE TABLE) hash-partitioned by `key` over the shards (all of
-- them by default), one foreign partition per shard, and the same table on each shard. Rows
-- inserted here go to their shard. Returns the number of partitions.
CREATE FUNCTION flock.create_distributed_table(name text, columns text, key text, shards name[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  chosen name[] := coalesce(shards, ARRAY(SELECT s.name FROM flock.shards s ORDER BY s.name));
  ident text[] := parse_ident(name);
  qualified text;
  remote_schema text;
  remote_table text;
  i integer := 0;
  shard name;
BEGIN
  PERFORM flock._require_extensions(ARRAY['postgres_fdw', 'dblink']);
  IF cardinality(chosen) = 0 THEN
    RAISE EXCEPTION 'no shards to distribute "%" over', name USING ERRCODE = 'object_not_in_prerequisite_state',
      HINT = 'Add shards first: CALL flock.add_shard(...).';
  END IF;
  remote_schema := CASE WHEN cardinality(ident) = 2 THEN ident[1] ELSE 'public' END;
  remote_table := ident[cardinality(ident)];
  qualified := format('%I.%I', remote_schema, remote_table);
  EXECUTE format('CREATE TABLE %s (%s) PARTITION BY HASH (%I)', qualified, columns, key);
  FOREACH shard IN ARRAY chosen LOOP
    IF NOT EXISTS (SELECT 1 FROM flock.shards s WHERE s.name = shard) THEN
      RAISE EXCEPTION 'no shard "%"', shard USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM flock._on_shard(shard, format('CREATE SCHEMA IF NOT EXISTS %I; CREATE TABLE %s (%s)',
                                          remote_schema, qualified, columns));
    EXECUTE format('CREATE FOREIGN TABLE %I.%I PARTITION OF %s FOR VALUES WITH (MODULUS %s, REMAINDER %s) '
                   'SERVER %I OPTIONS (schema_name %L, table_name %L)',
                   remote_schema, remote_table || '_' || shard, qualified, cardinality(chosen), i,
                   shard, remote_schema, remote_table);
    i := i + 1;
  END LOOP;
  RETURN i;
END $$;

-- Per shard: reachable or not (and why), the model versions it holds against the coordinator's,
-- and how far its catalog subscription is behind (bytes of WAL its slot has not confirmed).
CREATE FUNCTION flock.distribution_status()
RETURNS TABLE (shard name, reachable boolean, models bigint, coordinator_models bigint, lag_bytes numeric, error text)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  s record;
BEGIN
  FOR s IN SELECT * FROM flock.shards ORDER BY name LOOP
    shard := s.name;
    coordinator_models := (SELECT count(*) FROM flock.models);
    lag_bytes := (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), r.confirmed_flush_lsn)
                  FROM pg_replication_slots r WHERE r.slot_name = 'flock_' || s.name);
    BEGIN
      SELECT n INTO models FROM dblink(flock._shard_dsn(s.name), 'SELECT count(*) FROM flock.models') AS r(n bigint);
      reachable := true;
      error := NULL;
    EXCEPTION WHEN OTHERS THEN
      reachable := false;
      models := NULL;
      error := SQLERRM;
    END;
    RETURN NEXT;
  END LOOP;
END $$;

-- Waits until every shard holds the version `ref` names here (by sha256), up to `timeout`; returns
-- how long it took. The bound on "registered on the coordinator, usable on every shard".
CREATE FUNCTION flock.wait_for_shards(ref text, timeout interval DEFAULT '30 seconds') RETURNS interval
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  started timestamptz := clock_timestamp();
  sha text := (SELECT r.sha256 FROM flock._resolve(ref) r);
  missing name[];
BEGIN
  LOOP
    missing := ARRAY(SELECT s.name FROM flock.shards s
                     WHERE NOT EXISTS (SELECT 1 FROM dblink(flock._shard_dsn(s.name),
                                                            format('SELECT 1 FROM flock.models WHERE sha256 = %L', sha)) AS r(one int))
                     ORDER BY s.name);
    EXIT WHEN cardinality(missing) = 0;
    IF clock_timestamp() - started > timeout THEN
      RAISE EXCEPTION 'model "%" has not reached shard(s) % within %', ref, array_to_string(missing, ', '), timeout
        USING ERRCODE = 'query_canceled', HINT = 'flock.distribution_status() shows each shard''s catalog lag.';
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN clock_timestamp() - started;
END $$;

-- The session's dblink connection to the shard for the current role (one per shard and role, as
-- postgres_fdw keeps one per user mapping; kept for the session, so later calls skip connecting
-- and find the shard's compiled models in its backend's cache; after SET ROLE another role's
-- connection is never reused), with `sql` sent on it. A connection that cannot take it (results
-- left unread by a statement that stopped early, a statement still running after an error) is
-- replaced by a new one. Errors name the shard.
CREATE FUNCTION flock._send_to_shard(shard name, sql text) RETURNS text
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, public, pg_temp SET client_min_messages = warning AS $$
DECLARE
  conn text := format('flock_shard_%s_%s', shard, current_user);
  state text; msg text; detail text; hint text;
BEGIN
  IF conn = ANY (coalesce(dblink_get_connections(), '{}')) THEN
    IF dblink_is_busy(conn) = 0 THEN
      BEGIN
        -- The end of the last statement's results (the planner's query reads the rows only).
        PERFORM * FROM dblink_get_result(conn, false) AS done(x text);
      EXCEPTION WHEN OTHERS THEN
        NULL;  -- rows of another shape left unread: the send below fails, and the connection is replaced
      END;
      IF dblink_send_query(conn, sql) = 1 THEN
        RETURN conn;
      END IF;
    END IF;
    PERFORM dblink_disconnect(conn);
  END IF;
  PERFORM dblink_connect(conn, flock._shard_dsn(shard));
  IF dblink_send_query(conn, sql) <> 1 THEN
    RAISE EXCEPTION 'could not send the query' USING ERRCODE = 'connection_failure';
  END IF;
  RETURN conn;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
  IF conn = ANY (coalesce(dblink_get_connections(), '{}')) THEN
    PERFORM dblink_disconnect(conn);  -- a connection in an unknown state is not kept
  END IF;
  RAISE EXCEPTION 'shard "%": %', shard, msg USING ERRCODE = state, DETAIL = coalesce(detail, ''), HINT = coalesce(hint, '');
END $$;

-- What on_shards and _send_to_shards check before anything reaches a shard: the caller may read
-- the table here (postgres_fdw checks that for a query over it; the shards check their own for
-- the mapped user), and no row-level security applies to it (its policies would not apply on
-- the shards). Returns the table's shards.
CREATE FUNCTION flock._shards_of(tbl regclass) RETURNS name[]
LANGUAGE plpgsql STABLE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  shard_names name[];
BEGIN
  PERFORM flock._require_extensions(ARRAY['postgres_fdw', 'dblink']);
  IF NOT has_table_privilege(tbl, 'SELECT') THEN
    RAISE EXCEPTION 'permission denied for table %', tbl USING ERRCODE = 'insufficient_privilege',
      HINT = 'flock.on_shards reads the table as a query over it would.';
  END IF;
  IF row_security_active(tbl) THEN
    RAISE EXCEPTION 'row-level security is active on %', tbl USING ERRCODE = 'feature_not_supported',
      HINT = 'flock.on_shards runs the query on the shards, where the coordinator''s policies do not apply.';
  END IF;
  shard_names := ARRAY(SELECT DISTINCT fs.srvname FROM pg_inherits i
                       JOIN pg_foreign_table ft ON ft.ftrelid = i.inhrelid
                       JOIN pg_foreign_server fs ON fs.oid = ft.ftserver
                       WHERE i.inhparent = tbl ORDER BY fs.srvname);
  IF cardinality(shard_names) = 0 THEN
    RAISE EXCEPTION '"%" has no foreign partitions', tbl USING ERRCODE = 'wrong_object_type',
      HINT = 'Create it with flock.create_distributed_table.';
  END IF;
  RETURN shard_names;
END $$;

-- `query` for the shards: each model resolved here to the version it names now, `%1$s`, `%2$s`...
-- replaced by 'name@N', and gated by flock.require_pinned of each version's pin, so that no row
-- leaves a shard unless it holds those exact bytes (and no extra round trip).
CREATE FUNCTION flock._pinned_query(query text, models text[], OUT shard_query text, OUT remote_query text)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  refs text[] := '{}';
  pins text[] := '{}';
  r record;
BEGIN
  FOR k IN 1 .. coalesce(cardinality(models), 0) LOOP
    SELECT m.name || '@' || m.version AS ref, flock.pin(m.name || '@' || m.version)::text AS pin INTO r
      FROM flock._resolve(models[k]) m;
    refs := refs || r.ref;
    pins := pins || r.pin;
  END LOOP;
  shard_query := format(query, VARIADIC ARRAY(SELECT quote_literal(x) FROM unnest(refs) x));
  -- A one-time filter (an InitPlan, checked before the first row is read), not a join: the
  -- query's own plan stays as it is, so its predictions are batched on the shard.
  remote_query := CASE WHEN cardinality(pins) = 0 THEN shard_query
                       ELSE format('SELECT q.* FROM (%s) AS q WHERE (SELECT %s)', shard_query,
                                   (SELECT string_agg(format('flock.require_pinned(%L)', p), ' AND ') FROM unnest(pins) p)) END;
END $$;

-- Raises unless the shards' own connections see what this statement would see: a one-time filter
-- of every query the planner moves onto the shards (a plan made earlier, reused after this
-- transaction has written or inside a repeatable read transaction block, is stopped, never
-- answered from other data). STABLE: evaluated once, before anything is sent.
CREATE FUNCTION flock._shards_see_statement() RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_shards_see_statement' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;

-- The first half of flock.on_shards, for the planner's rewrite of predictions over a distributed
-- table (flock.distribute_predictions): sends the query to every shard of `tbl` and returns each
-- shard's connection, whose rows the rewritten query reads with dblink_get_result (no copy through
-- PL/pgSQL: the rows go straight from dblink to the plan). The result's columns are the planner's
-- to know. Every query is sent before this returns, so the shards work at the same time.
CREATE FUNCTION flock._send_to_shards(tbl regclass, query text, VARIADIC models text[] DEFAULT '{}')
RETURNS TABLE (shard name, conn text)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  remote_query text := (SELECT p.remote_query FROM flock._pinned_query(query, models) p);
BEGIN
  FOREACH shard IN ARRAY flock._shards_of(tbl) LOOP
    conn := flock._send_to_shard(shard, remote_query);
    RETURN NEXT;
  END LOOP;
END $$;

-- Runs `query` on every shard holding a partition of `tbl`, all at once, and returns the union of
-- their rows (call it with a column definition list, as dblink). `%1$s`, `%2$s`... in the query
-- stand for the models given after it, each pinned here to the version it resolves to now: each
-- shard runs the query with 'name@N' (plain flock.predict: batched on the shard) joined to
-- flock.require_pinned of each, so it answers only if it holds those exact bytes. `%` itself is
-- written `%%` (format()). Connections are kept for the session. The query runs on the shard as written, against the shard's table of the same name
-- (flock.create_distributed_table makes it so): aggregates there are partial, to be combined
-- here. An error on a shard (down, missing version...) names it; no partial result is returned.
CREATE FUNCTION flock.on_shards(tbl regclass, query text, VARIADIC models text[] DEFAULT '{}')
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
  queries record;
  columns text;
  shard_names name[] := flock._shards_of(tbl);
  conns text[] := '{}';
  k integer;
  state text; msg text; detail text; hint text;
  failed name;
BEGIN
  queries := flock._pinned_query(query, models);
  -- The result's columns: the query planned here, over the coordinator's table of the same name
  -- (never run).
  BEGIN
    EXECUTE 'CREATE TEMP VIEW flock_on_shards_columns AS ' || queries.shard_query;
  EXCEPTION WHEN duplicate_column THEN
    RAISE EXCEPTION 'the columns of a query for flock.on_shards need names of their own' USING ERRCODE = 'duplicate_column',
      DETAIL = SQLERRM, HINT = 'Name each output column (AS name).';
  END;
  SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
    INTO columns FROM pg_attribute a WHERE a.attrelid = 'pg_temp.flock_on_shards_columns'::regclass AND a.attnum > 0;
  DROP VIEW pg_temp.flock_on_shards_columns;
  -- Send the query to every shard before reading any result, so they run concurrently.
  FOR k IN 1 .. cardinality(shard_names) LOOP
    conns := conns || flock._send_to_shard(shard_names[k], queries.remote_query);
  END LOOP;
  BEGIN
    FOR k IN 1 .. cardinality(shard_names) LOOP
      failed := shard_names[k];
      RETURN QUERY EXECUTE format('SELECT * FROM dblink_get_result(%L) AS r(%s)', conns[k], columns);
      PERFORM * FROM dblink_get_result(conns[k]) AS done(x text);  -- the end of the results
    END LOOP;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    -- A connection in an unknown state is not kept.
    FOR k IN 1 .. cardinality(conns) LOOP
      PERFORM dblink_disconnect(conns[k]);
    END LOOP;
    IF msg NOT LIKE 'shard "%' THEN
      msg := format('shard "%s": %s', failed, msg);
    END IF;
    RAISE EXCEPTION '%', msg USING ERRCODE = state, DETAIL = coalesce(detail, ''), HINT = coalesce(hint, '');
  END;
END $$;
