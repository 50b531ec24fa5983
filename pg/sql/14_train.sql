-- Flock training in the database (issue 16): flock.train snapshots the data, trains, registers the
-- model and records the run, all in the caller's transaction; flock.train_progress shows runs.

-- ---------------------------------------------------------------------------------------------
-- The fit: a data set's table -> a serialized model, its metrics on the held-out rows. Runs as
-- the caller, who must be able to read the table (pg/src/train.cpp).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._train_fit(data regclass, target text, features text[], algorithm text, params jsonb,
                                 test_fraction float8, seed integer, model_name text,
                                 OUT model bytea, OUT format text, OUT feature_names text[], OUT used_params jsonb,
                                 OUT metrics jsonb, OUT environment jsonb)
  AS 'MODULE_PATHNAME', 'flock_train_fit' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- flock.train's next snapshot in this transaction keeps its numeric columns in memory as float4,
-- so that _train_fit does not read again the table just written (pg/src/train.cpp).
CREATE FUNCTION flock._train_capture_next() RETURNS void
  AS 'MODULE_PATHNAME', 'flock_train_capture_next' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- Raises the error registering would raise for `name` (invalid, or a model another role manages),
-- before any data is read or any model trained.
CREATE FUNCTION flock.__train_check_name(name text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'model name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' THEN
    RAISE EXCEPTION 'invalid model name "%" for training', name USING ERRCODE = 'invalid_name',
      HINT = 'A trained model''s name starts with a letter or underscore and has up to 50 letters, digits, _ . or - '
             '(its training data set takes the same name).';
  END IF;
  IF EXISTS (SELECT 1 FROM flock.models m WHERE m.name = __train_check_name.name)
     AND NOT flock._may(flock._caller(), name, 'manage') THEN
    RAISE EXCEPTION 'permission denied to register a new version of model "%"', name
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'The name is taken. Training a new version of an existing model needs the ''manage'' privilege on it '
                   '(flock.grant_model); or choose another name.';
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock.__train_check_name(text) FROM PUBLIC;
CREATE FUNCTION flock._train_check_name(name text) RETURNS void
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- flock.train's body, with the caller's search_path passed in (`path`): the data's names resolve
-- with it, everything else with the pinned one.
CREATE FUNCTION flock._train(path text, name text, data text, target text, algorithm text, params jsonb,
                             features text[], test_fraction float8, seed integer) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  statement text := current_query();
  ds flock.datasets;
  rel regclass;
  query text;
  started timestamptz;
  fit record;
  ref text;
BEGIN
  IF data IS NULL OR btrim(data) = '' THEN
    RAISE EXCEPTION 'data must name a table, a data set (name@version) or be a query'
      USING ERRCODE = CASE WHEN data IS NULL THEN 'null_value_not_allowed' ELSE 'invalid_parameter_value' END,
            HINT = 'e.g. flock.train(''churn'', ''customers'', ''churned'') or flock.train(''churn'', ''SELECT ... FROM ...'', ''churned'').';
  END IF;
  IF target IS NULL THEN
    RAISE EXCEPTION 'target must not be NULL' USING ERRCODE = 'null_value_not_allowed',
      HINT = 'Name the column to predict.';
  END IF;
  IF algorithm IS NULL OR algorithm NOT IN ('xgboost', 'linear', 'logistic') THEN
    RAISE EXCEPTION 'unknown training algorithm "%"', algorithm USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''xgboost'', ''linear'' (ridge regression) or ''logistic'' (L2-penalized logistic regression).';
  END IF;
  IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
    RAISE EXCEPTION 'params must be a JSON object' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'e.g. ''{"max_depth": 3, "num_boost_round": 50}''.';
  END IF;
  IF test_fraction IS NULL OR NOT (test_fraction >= 0 AND test_fraction < 1) OR seed IS NULL THEN
    RAISE EXCEPTION 'test_fraction must be at least 0 and less than 1, and seed not NULL'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'test_fraction 0.2 holds out about a fifth of the rows.';
  END IF;
  PERFORM flock._train_check_name(name);

  -- The data: a data set version as it is; a table, view or query snapshotted now, as the caller.
  IF data ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}@[0-9]{1,9}$'
     AND EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = split_part(data, '@', 1)) THEN
    ds := flock._resolve_dataset(data);
  ELSE
    IF data ~* '^\s*(\(|select\s|with\s|values\s|table\s)' THEN
      query := data;
    ELSE
      PERFORM set_config('search_path', path, true);
      BEGIN
        rel := data::regclass;
      EXCEPTION WHEN undefined_table OR invalid_name OR syntax_error OR invalid_schema_name THEN
        RAISE EXCEPTION 'no table or view "%" for the training data', data USING ERRCODE = 'undefined_table',
          HINT = 'data is a table or view (found with your search_path), a data set reference name@version, '
                 'or a query starting with SELECT, WITH, VALUES or TABLE.';
      END;
      PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
      SELECT format('SELECT * FROM %I.%I', n.nspname, c.relname) INTO query
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    END IF;
    -- Rows in the order the query gives them: a synchronized scan could start mid-table.
    PERFORM set_config('synchronize_seqscans', 'off', true);
    -- The snapshot keeps the numeric columns in memory as it writes them, for _train_fit below.
    PERFORM flock._train_capture_next();
    PERFORM set_config('search_path', path, true);
    ref := flock.snapshot_dataset(name, query, format('training data of model %s', name));
    PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
    ds := flock._resolve_dataset(ref);
  END IF;

  started := clock_timestamp();
  SELECT * INTO fit FROM flock._train_fit(ds.table_name::regclass, target, features, algorithm, params,
                                          test_fraction, seed, name);
  ref := flock.register_model(name, fit.model, fit.format, format('trained by flock.train on data set %s@%s', ds.name, ds.version),
                              fit.feature_names);
  PERFORM flock.log_training(
    ref, ARRAY[ds.name || '@' || ds.version], statement, 'flock.train',
    jsonb_build_object('algorithm', algorithm, 'target', target, 'features', to_jsonb(fit.feature_names),
                       'test_fraction', test_fraction, 'seed', seed,
                       'split', 'row i (0-based, in the data''s order) is held out when u < test_fraction, '
                                'u = (splitmix64((uint32(seed) << 32) + i) >> 11) * 2^-53',
                       'params', fit.used_params),
    fit.metrics || jsonb_build_object('training_seconds',
                                      round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)),
    fit.environment || jsonb_build_object('postgresql', current_setting('server_version'),
                                          'flock', (SELECT e.extversion FROM pg_extension e WHERE e.extname = 'flock')));
  RETURN ref;
END $$;

CREATE FUNCTION flock.train(name text, data text, target text, algorithm text DEFAULT 'xgboost',
                            params jsonb DEFAULT '{}', features text[] DEFAULT NULL, test_fraction float8 DEFAULT 0.2,
                            seed integer DEFAULT 0) RETURNS text
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
  SELECT flock._train(pg_catalog.current_setting('search_path'), name, data, target, algorithm, params, features,
                      test_fraction, seed)
$$;
COMMENT ON FUNCTION flock.train(text, text, text, text, jsonb, text[], float8, integer) IS
  'snapshots data (a table, data set name@version or query), trains a model on it, registers it and records the run; returns ''name@version''';

-- ---------------------------------------------------------------------------------------------
-- Progress of the runs under way (needs flock in shared_preload_libraries), as pg_stat_progress_*:
-- your roles' runs, or every run for superusers and pg_read_all_stats.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._train_progress(OUT pid integer, OUT datid oid, OUT userid oid, OUT model text,
                                      OUT algorithm text, OUT phase text, OUT rows bigint, OUT features integer,
                                      OUT round integer, OUT rounds integer, OUT test_metric float8,
                                      OUT started timestamptz)
  RETURNS SETOF record AS 'MODULE_PATHNAME', 'flock_train_progress' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE VIEW flock.train_progress AS
  SELECT p.pid, p.datid, d.datname, p.userid, r.rolname AS usename, p.model, p.algorithm, p.phase, p.rows, p.features,
         p.round, p.rounds, p.test_metric, p.started
    FROM flock._train_progress() p
    LEFT JOIN pg_catalog.pg_database d ON d.oid = p.datid
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = p.userid;
COMMENT ON VIEW flock.train_progress IS 'flock.train runs under way: one row per backend, rounds done and planned';
GRANT SELECT ON flock.train_progress TO PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Content hashes of data set snapshots in C (pg/src/train_hash.cpp): flock.train snapshots before
-- every run. Definition 'text' (flock._table_hash_sql, 12_datasets.sql) in one heap scan of a
-- snapshot, other relations through the SQL form (its oracle in tests/pg/test_train.py);
-- definition 'binary' (the rows' binary COPY form, README "Data sets: the content hash") from a
-- heap scan, or SELECT * where row-level security applies. flock.snapshot_dataset computes the
-- binary hash while it writes the rows (no second read); these recompute it for verify_dataset.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._table_hash_chunks(rel regclass, method text, OUT row_count bigint, OUT chunks bytea)
  AS 'MODULE_PATHNAME', 'flock_table_hash_chunks' LANGUAGE C STABLE STRICT PARALLEL UNSAFE
  SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD' SET "IntervalStyle" = 'postgres'
  SET extra_float_digits = '1' SET bytea_output = 'hex';
-- Can the binary definition hash every column of rel? (A send function, and no OID of a
-- user-defined type in the binary form: no composite columns, no arrays of user-defined types.)
CREATE FUNCTION flock._binary_hashable(rel regclass) RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_binary_hashable' LANGUAGE C STABLE STRICT PARALLEL UNSAFE;
-- Row count, columns and content hash of rel by definition `method`; NULL: the definition recorded
-- for rel when it is a data set's table, else 'binary' when rel's columns allow it, else 'text'.
CREATE FUNCTION flock._table_hash(rel regclass, method text DEFAULT NULL, OUT row_count bigint, OUT columns jsonb,
                                  OUT content_hash text, OUT hash_method text)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  fast record;
BEGIN
  hash_method := coalesce(method, (SELECT d.hash_method FROM flock.datasets d WHERE to_regclass(d.table_name) = rel),
                          CASE WHEN flock._binary_hashable(rel) THEN 'binary' ELSE 'text' END);
  SELECT * INTO fast FROM flock._table_hash_chunks(rel, hash_method);
  IF fast.row_count IS NULL THEN
    SELECT * INTO row_count, columns, content_hash FROM flock._table_hash_sql(rel);
    RETURN;
  END IF;
  columns := flock._table_columns(rel);
  row_count := fast.row_count;
  content_hash := encode(sha256(convert_to(columns::text || E'\n' || row_count, 'UTF8') || sha256(fast.chunks)), 'hex');
END $$;
