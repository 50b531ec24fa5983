-- Flock privacy: personal-data marks that follow the data wherever Flock copies it (snapshots, the
-- inference log, hence training and exports), retention, and erasure of one data subject.
-- Everything here is done by roles granted flock_privacy_admin and recorded in flock.privacy_events.

-- ---------------------------------------------------------------------------------------------
-- The privacy role. Roles are cluster-wide: a second database's CREATE EXTENSION finds it there.
-- ---------------------------------------------------------------------------------------------
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flock_privacy_admin') THEN
    CREATE ROLE flock_privacy_admin NOLOGIN;
  END IF;
END $$;
COMMENT ON ROLE flock_privacy_admin IS 'may classify columns, set retention and erase data subjects (Flock)';

-- Raises 42501 unless the role Flock acts for is (a member of) flock_privacy_admin. `action`
-- completes "permission denied to ...".
CREATE FUNCTION flock._require_privacy_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
BEGIN
  IF NOT pg_has_role(caller, 'flock_privacy_admin', 'USAGE') THEN
    RAISE EXCEPTION 'permission denied to %', action USING ERRCODE = 'insufficient_privilege',
      DETAIL = format('Role %I is not a member of flock_privacy_admin.', caller),
      HINT = format('A superuser can grant it: GRANT flock_privacy_admin TO %I;', caller);
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock._require_privacy_admin(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- The audit of privacy actions, and the lineage edges they leave (retention drops, erasures).
-- Neither holds personal data: names, counts, hashes of whole data sets, never a subject's values.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.privacy_events (
  id     bigserial   PRIMARY KEY,
  at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  actor  name        NOT NULL,
  action text        NOT NULL CHECK (action IN ('classify', 'unclassify', 'set_retention', 'apply_retention', 'erase')),
  target text        NOT NULL,
  detail jsonb
);
COMMENT ON TABLE flock.privacy_events IS 'every privacy action (classify, retention, erasure): who, what, when; never the data';
SELECT pg_catalog.pg_extension_config_dump('flock.privacy_events', '');
SELECT pg_catalog.pg_extension_config_dump('flock.privacy_events_id_seq', '');
REVOKE ALL ON flock.privacy_events FROM PUBLIC;
GRANT SELECT ON flock.privacy_events TO flock_privacy_admin;

CREATE TABLE flock.privacy_lineage (
  from_kind text        NOT NULL,
  from_ref  text        NOT NULL,
  relation  text        NOT NULL CHECK (relation IN ('retention_dropped', 'retention_purged', 'erased')),
  to_kind   text        NOT NULL,
  to_ref    text        NOT NULL,
  at        timestamptz NOT NULL,
  actor     name        NOT NULL,
  detail    jsonb
);
COMMENT ON TABLE flock.privacy_lineage IS 'lineage edges of privacy actions: data set versions and log rows dropped by retention, erasures';
SELECT pg_catalog.pg_extension_config_dump('flock.privacy_lineage', '');
ALTER TABLE flock.privacy_lineage ENABLE ROW LEVEL SECURITY;
-- Visible to privacy admins, and to the roles that see the data set or may use the model.
CREATE POLICY privacy_lineage_visible ON flock.privacy_lineage FOR SELECT
  USING (pg_catalog.pg_has_role('flock_privacy_admin', 'USAGE')
         OR (from_kind = 'dataset' AND EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name || '@' || d.version = from_ref))
         OR (from_kind = 'model' AND pg_catalog.split_part(from_ref, '@', 1) IN (SELECT p.name FROM flock.model_privileges p)));
REVOKE ALL ON flock.privacy_lineage FROM PUBLIC;
GRANT SELECT ON flock.privacy_lineage TO PUBLIC;

CREATE FUNCTION flock._privacy_event(action text, target text, detail jsonb) RETURNS bigint
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO flock.privacy_events (actor, action, target, detail) VALUES (flock._caller(), action, target, detail)
  RETURNING id
$$;
REVOKE ALL ON FUNCTION flock._privacy_event(text, text, jsonb) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- The key of the keyed hash (HMAC-SHA-256). Made at the first classification (not at CREATE
-- EXTENSION, so pg_restore's copy of the dumped key is the only row); readable by the extension
-- owner alone. Stored as the two padded keys of RFC 2104, which are as secret as the key.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock._privacy_key (
  id         integer     PRIMARY KEY CHECK (id = 1),
  inner_key  bytea       NOT NULL CHECK (length(inner_key) = 64),
  outer_key  bytea       NOT NULL CHECK (length(outer_key) = 64),
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flock._privacy_key IS 'the server-side HMAC key of hash-marked columns (extension owner only)';
SELECT pg_catalog.pg_extension_config_dump('flock._privacy_key', '');
REVOKE ALL ON flock._privacy_key FROM PUBLIC;

CREATE FUNCTION flock._privacy_ensure_key() RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  -- 2 x 122 random bits from the server's strong random source.
  key bytea := sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
  padded bytea;
  inner_key bytea;
  outer_key bytea;
BEGIN
  IF EXISTS (SELECT 1 FROM flock._privacy_key) THEN
    RETURN;
  END IF;
  padded := key || decode(repeat('00', 64 - length(key)), 'hex');
  inner_key := padded;
  outer_key := padded;
  FOR i IN 0..63 LOOP
    inner_key := set_byte(inner_key, i, get_byte(padded, i) # 54);   -- 0x36
    outer_key := set_byte(outer_key, i, get_byte(padded, i) # 92);   -- 0x5c
  END LOOP;
  INSERT INTO flock._privacy_key (id, inner_key, outer_key) VALUES (1, inner_key, outer_key) ON CONFLICT DO NOTHING;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_ensure_key() FROM PUBLIC;

-- HMAC-SHA-256 of a value's text form, hex. Not executable by PUBLIC: it would let anyone test
-- guesses against hashed values.
CREATE FUNCTION flock._privacy_hmac(value text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT encode(sha256(k.outer_key || sha256(k.inner_key || convert_to(value, 'UTF8'))), 'hex')
    FROM flock._privacy_key k WHERE k.id = 1
$$;
REVOKE ALL ON FUNCTION flock._privacy_hmac(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Column marks.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.privacy_marks (
  table_oid   regclass    NOT NULL,
  column_name name        NOT NULL,
  class       text        NOT NULL CHECK (class IN ('direct_identifier', 'quasi_identifier', 'sensitive')),
  action      text        NOT NULL CHECK (action IN ('keep', 'hash', 'redact', 'generalize')),
  width       numeric     CHECK ((action = 'generalize') = (width IS NOT NULL) AND (width IS NULL OR width > 0)),
  set_by      name        NOT NULL,
  set_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_oid, column_name)
);
COMMENT ON TABLE flock.privacy_marks IS 'columns marked as personal data and what Flock does with them wherever it copies them';
SELECT pg_catalog.pg_extension_config_dump('flock.privacy_marks', '');
REVOKE ALL ON flock.privacy_marks FROM PUBLIC;
GRANT SELECT ON flock.privacy_marks TO PUBLIC;

-- How strict an action is: a column name marked in several tables gets the strictest.
CREATE FUNCTION flock._privacy_strictness(action text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE action WHEN 'redact' THEN 4 WHEN 'hash' THEN 3 WHEN 'generalize' THEN 2 ELSE 1 END
$$;

-- Which inputs of each model version were personal data: recorded at registration and refreshed at
-- every (un)classification and training record. The inference log does not know which table a
-- scored row came from, so a feature counts as personal when a marked column has its name
-- (case-insensitively): among the tables the model's training data sets were taken from when it
-- has training lineage, else among all marked columns; the strictest mark wins.
CREATE TABLE flock.model_personal_inputs (
  model_name    text        NOT NULL,
  model_version integer     NOT NULL,
  feature       text        NOT NULL,
  class         text        NOT NULL,
  action        text        NOT NULL,
  width         numeric,
  columns       text[]      NOT NULL,   -- the marked columns it matched, as table.column
  recorded_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_name, model_version, feature),
  FOREIGN KEY (model_name, model_version) REFERENCES flock.models (name, version) ON DELETE CASCADE
);
COMMENT ON TABLE flock.model_personal_inputs IS 'inputs of each model version that are personal data, and how the inference log records them';
-- Derived from flock.models and flock.privacy_marks (so not dumped): triggers on both keep it, also
-- while pg_restore loads them, in whichever order.
REVOKE ALL ON flock.model_personal_inputs FROM PUBLIC;
GRANT SELECT ON flock.model_personal_inputs TO PUBLIC;

-- The input names of a signature: its feature names, else its input names.
CREATE FUNCTION flock._signature_features(signature jsonb) RETURNS SETOF text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT f FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(signature->'features') = 'array'
                                               THEN signature->'features' ELSE '[]' END) f
  UNION
  SELECT i->>'name' FROM jsonb_array_elements(CASE WHEN jsonb_typeof(signature->'inputs') = 'array'
                                                   THEN signature->'inputs' ELSE '[]' END) i
   WHERE jsonb_typeof(i) = 'object' AND i ? 'name'
     AND NOT (jsonb_typeof(signature->'features') = 'array' AND jsonb_array_length(signature->'features') > 0)
$$;

-- Recomputes flock.model_personal_inputs for one model version, or every version (NULLs).
CREATE FUNCTION flock._privacy_refresh_models(only_name text DEFAULT NULL, only_version integer DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  DELETE FROM flock.model_personal_inputs p
   WHERE (only_name IS NULL OR p.model_name = only_name) AND (only_version IS NULL OR p.model_version = only_version);
  INSERT INTO flock.model_personal_inputs (model_name, model_version, feature, class, action, width, columns)
  SELECT DISTINCT ON (m.name, m.version, f.feature)
         m.name, m.version, f.feature, k.class, k.action, k.width,
         array_agg(format('%s.%I', k.table_oid, k.column_name)) OVER (PARTITION BY m.name, m.version, f.feature)
    FROM flock.models m
    CROSS JOIN LATERAL flock._signature_features(m.signature) AS f(feature)
    CROSS JOIN LATERAL (SELECT array_agg(DISTINCT t) AS tables
                          FROM flock.training_runs r
                          JOIN flock.training_inputs i ON i.run_id = r.id
                          JOIN flock.datasets d ON d.name = i.dataset_name AND d.version = i.dataset_version
                          CROSS JOIN LATERAL flock._privacy_source_tables(d.sources) AS t
                         WHERE r.model_name = m.name AND r.model_version = m.version) lineage
    JOIN flock.privacy_marks k ON lower(k.column_name) = lower(f.feature)
                              AND (lineage.tables IS NULL OR k.table_oid = ANY (lineage.tables))
   WHERE (only_name IS NULL OR m.name = only_name) AND (only_version IS NULL OR m.version = only_version)
   ORDER BY m.name, m.version, f.feature, flock._privacy_strictness(k.action) DESC, k.width DESC NULLS LAST;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_refresh_models(text, integer) FROM PUBLIC;

CREATE FUNCTION flock._privacy_model_registered() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM flock.privacy_marks) THEN
    PERFORM flock._privacy_refresh_models(NEW.name, NEW.version);
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_model_registered() FROM PUBLIC;
CREATE TRIGGER models_personal_inputs AFTER INSERT ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._privacy_model_registered();

CREATE FUNCTION flock._privacy_training_recorded() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  run record;
BEGIN
  IF EXISTS (SELECT 1 FROM flock.privacy_marks) THEN
    FOR run IN SELECT DISTINCT r.model_name, r.model_version FROM flock.training_runs r WHERE r.id = NEW.run_id LOOP
      PERFORM flock._privacy_refresh_models(run.model_name, run.model_version);
    END LOOP;
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_training_recorded() FROM PUBLIC;
CREATE TRIGGER training_inputs_personal_inputs AFTER INSERT ON flock.training_inputs
  FOR EACH ROW EXECUTE FUNCTION flock._privacy_training_recorded();

CREATE FUNCTION flock._privacy_marks_changed() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  PERFORM flock._privacy_refresh_models();
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_marks_changed() FROM PUBLIC;
CREATE TRIGGER privacy_marks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flock.privacy_marks
  FOR EACH STATEMENT EXECUTE FUNCTION flock._privacy_marks_changed();

-- A model's personal inputs as jsonb: {feature: {class, action, width, columns}}; '{}' for none.
CREATE FUNCTION flock.personal_inputs(model text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m record;
BEGIN
  SELECT * INTO m FROM flock._resolve(model);
  RETURN flock._personal_inputs_of(m.name, m.version);
END $$;
COMMENT ON FUNCTION flock.personal_inputs(text) IS
  'which inputs of a model version are personal data: {feature: {class, action, width, columns}}';

CREATE FUNCTION flock._classify_column("table" regclass, "column" name, class text, action text, width numeric DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  col_type oid;
  result jsonb;
BEGIN
  PERFORM flock._require_privacy_admin('classify columns');
  IF "table" IS NULL OR "column" IS NULL OR class IS NULL OR action IS NULL THEN
    RAISE EXCEPTION 'table, column, class and action must not be NULL' USING ERRCODE = 'null_value_not_allowed',
      HINT = 'Example: flock.classify_column(''customers'', ''email'', ''direct_identifier'', ''hash'').';
  END IF;
  IF class NOT IN ('direct_identifier', 'quasi_identifier', 'sensitive') THEN
    RAISE EXCEPTION 'unknown privacy class "%"', class USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''direct_identifier'', ''quasi_identifier'' or ''sensitive''.';
  END IF;
  IF action NOT IN ('keep', 'hash', 'redact', 'generalize') THEN
    RAISE EXCEPTION 'unknown privacy action "%"', action USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''keep'', ''hash'' (keyed HMAC-SHA-256), ''redact'' or ''generalize'' (with a bucket width).';
  END IF;
  IF (action = 'generalize') <> (width IS NOT NULL) OR width <= 0 THEN
    RAISE EXCEPTION 'action "%" with width %', action, coalesce(width::text, 'NULL') USING ERRCODE = 'invalid_parameter_value',
      HINT = '''generalize'' needs a positive bucket width (values become floor(value / width) * width); the other actions take none.';
  END IF;
  SELECT a.atttypid INTO col_type FROM pg_attribute a
   WHERE a.attrelid = "table" AND a.attname = "column" AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of relation % does not exist', "column", "table" USING ERRCODE = 'undefined_column',
      HINT = format('Columns of %s: %s.', "table",
                    (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                      WHERE a.attrelid = "table" AND a.attnum > 0 AND NOT a.attisdropped));
  END IF;
  IF action = 'generalize' AND col_type NOT IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype,
                                                'float4'::regtype, 'float8'::regtype) THEN
    RAISE EXCEPTION 'column "%" of relation % is not numeric', "column", "table" USING ERRCODE = 'datatype_mismatch',
      HINT = '''generalize'' buckets numbers; use ''hash'' or ''redact'' for other types.';
  END IF;
  PERFORM flock._privacy_ensure_key();
  INSERT INTO flock.privacy_marks AS m (table_oid, column_name, class, action, width, set_by)
  VALUES ("table", "column", class, action, width, caller)
  ON CONFLICT (table_oid, column_name) DO UPDATE
    SET class = EXCLUDED.class, action = EXCLUDED.action, width = EXCLUDED.width, set_by = EXCLUDED.set_by, set_at = now();
  result := jsonb_strip_nulls(jsonb_build_object('table', "table"::text, 'column', "column", 'class', class,
                                                 'action', action, 'width', width));
  PERFORM flock._privacy_event('classify', format('%s.%I', "table", "column"), result);
  RETURN result;
END $$;
REVOKE ALL ON FUNCTION flock._classify_column(regclass, name, text, text, numeric) FROM PUBLIC;
CREATE FUNCTION flock.classify_column("table" regclass, "column" name, class text, action text, width numeric DEFAULT NULL)
RETURNS jsonb AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.classify_column(regclass, name, text, text, numeric) IS
  'marks a column as personal data and says what Flock does with it where it copies it: keep, hash, redact, generalize';

CREATE FUNCTION flock._unclassify_column("table" regclass, "column" name) RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  old flock.privacy_marks;
BEGIN
  PERFORM flock._require_privacy_admin('unclassify columns');
  IF "table" IS NULL OR "column" IS NULL THEN
    RAISE EXCEPTION 'table and column must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  DELETE FROM flock.privacy_marks m WHERE m.table_oid = "table" AND m.column_name = "column" RETURNING * INTO old;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  PERFORM flock._privacy_event('unclassify', format('%s.%I', "table", "column"),
                               jsonb_strip_nulls(jsonb_build_object('was', jsonb_build_object('class', old.class,
                                 'action', old.action, 'width', old.width))));
  RETURN true;
END $$;
REVOKE ALL ON FUNCTION flock._unclassify_column(regclass, name) FROM PUBLIC;
CREATE FUNCTION flock.unclassify_column("table" regclass, "column" name) RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.unclassify_column(regclass, name) IS
  'removes a column''s personal-data mark (copies already made stay as they were made); false if it had none';

-- ---------------------------------------------------------------------------------------------
-- Marks applied where Flock copies data.
-- ---------------------------------------------------------------------------------------------

-- The text a number is hashed as wherever it is copied: an integral value as an integer (so an
-- int column and the same value scored as a float32 feature hash alike), else its shortest exact
-- text as the type holds it. Callers pin extra_float_digits (left out here so the planner inlines it).
CREATE FUNCTION flock._privacy_number_text(x float8) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT CASE WHEN x = trunc(x) AND abs(x) < 1e15 THEN trunc(x)::bigint::text ELSE x::text END
$$;
CREATE FUNCTION flock._privacy_number_text(x real) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE AS $$
  SELECT CASE WHEN x = trunc(x) AND abs(x) < 1e15 THEN trunc(x)::bigint::text ELSE x::text END
$$;

-- The text forms a raw value (its text form) takes once copied under a mark: as text, as float8
-- and as real, then hashed or bucketed as the mark says. NULL for redact (nothing to compare).
CREATE FUNCTION flock._privacy_candidates(raw text, action text, width numeric) RETURNS text[]
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET extra_float_digits = '1' AS $$
DECLARE
  forms text[] := ARRAY[raw];
  number float8;
BEGIN
  IF raw IS NULL OR action = 'redact' THEN
    RETURN NULL;
  END IF;
  IF raw ~ '^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$' THEN
    number := raw::float8;
    forms := forms || number::text || number::real::text || flock._privacy_number_text(number)
                   || flock._privacy_number_text(number::real);
  END IF;
  IF action = 'hash' THEN
    RETURN ARRAY(SELECT DISTINCT flock._privacy_hmac(f) FROM unnest(forms) f);
  ELSIF action = 'generalize' THEN
    IF number IS NULL THEN
      RETURN NULL;
    END IF;
    number := floor(number / width::float8) * width::float8;
    RETURN ARRAY(SELECT DISTINCT f FROM unnest(ARRAY[number::text, number::real::text, number::numeric::text,
                                                      (floor(raw::numeric / width) * width)::text]) f);
  END IF;
  RETURN ARRAY(SELECT DISTINCT f FROM unnest(forms) f);
END $$;
REVOKE ALL ON FUNCTION flock._privacy_candidates(text, text, numeric) FROM PUBLIC;

-- The tables a snapshot's sources stand for: the sources, and what the views among them read.
CREATE FUNCTION flock._privacy_source_tables(sources text[]) RETURNS SETOF regclass
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
  WITH RECURSIVE rel(oid) AS (
    SELECT to_regclass(s) FROM unnest(sources) s WHERE to_regclass(s) IS NOT NULL
    UNION
    SELECT to_regclass(v) FROM rel JOIN pg_class c ON c.oid = rel.oid AND c.relkind IN ('v', 'm')
     CROSS JOIN LATERAL unnest(flock._view_sources(rel.oid)) v WHERE to_regclass(v) IS NOT NULL
  )
  SELECT oid FROM rel
$$;

-- Copies the caller's query result `tmp` into the snapshot table `target`, with the marks of the
-- columns it came from applied (matched by name among the marked columns of the tables the query
-- read). Returns NULL when no mark changed anything, else {marks, raw_row_count,
-- raw_content_hash}: the hash of the rows before the marks, which verify_dataset compares the
-- re-run query with. Called only by flock._store_snapshot.
CREATE FUNCTION flock._privacy_copy_snapshot(tmp regclass, sources text[], target text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  select_list text;
  marks jsonb;
  raw record;
BEGIN
  WITH cols AS (
    SELECT a.attnum, a.attname, a.atttypid AS type_oid, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a
     WHERE a.attrelid = tmp AND a.attnum > 0 AND NOT a.attisdropped
  ), marked AS (
    SELECT DISTINCT ON (c.attnum) c.attnum, m.class, m.action, m.width, format('%s.%I', m.table_oid, m.column_name) AS source
      FROM cols c JOIN flock.privacy_marks m ON m.column_name = c.attname
     WHERE m.table_oid IN (SELECT * FROM flock._privacy_source_tables(sources)) AND m.action <> 'keep'
     ORDER BY c.attnum, flock._privacy_strictness(m.action) DESC, m.width DESC NULLS LAST
  )
  SELECT string_agg(CASE mk.action
                      WHEN 'redact' THEN format('NULL::%s AS %I', c.type, c.attname)
                      WHEN 'hash' THEN format(CASE WHEN c.type_oid IN ('float4'::regtype, 'float8'::regtype)
                                                   THEN 'flock._privacy_hmac(flock._privacy_number_text(t.%I)) AS %I'
                                                   ELSE 'flock._privacy_hmac(t.%I::text) AS %I' END, c.attname, c.attname)
                      WHEN 'generalize' THEN format('(floor(t.%I::numeric / %s) * %s)::%s AS %I',
                                                    c.attname, mk.width, mk.width, c.type, c.attname)
                      ELSE format('t.%I', c.attname) END, ', ' ORDER BY c.attnum),
         jsonb_agg(jsonb_strip_nulls(jsonb_build_object('column', c.attname, 'class', mk.class, 'action', mk.action,
                                                        'width', mk.width, 'source', mk.source)) ORDER BY c.attnum)
           FILTER (WHERE mk.action IS NOT NULL)
    INTO select_list, marks
    FROM cols c LEFT JOIN marked mk ON mk.attnum = c.attnum;
  IF marks IS NULL THEN
    EXECUTE format('CREATE TABLE %s AS TABLE %s', target, tmp);
    RETURN NULL;
  END IF;
  SELECT * INTO raw FROM flock._table_hash(tmp);
  PERFORM set_config('extra_float_digits', '1', true);
  EXECUTE format('CREATE TABLE %s AS SELECT %s FROM %s t', target, select_list, tmp);
  RETURN jsonb_build_object('marks', marks, 'raw_row_count', raw.row_count, 'raw_content_hash', raw.content_hash);
END $$;
REVOKE ALL ON FUNCTION flock._privacy_copy_snapshot(regclass, text[], text) FROM PUBLIC;

-- What was applied to each snapshot version, and the hash of its rows before.
CREATE TABLE flock.dataset_privacy (
  name             text   NOT NULL,
  version          integer NOT NULL,
  marks            jsonb  NOT NULL,   -- [{column, class, action, width, source}]
  raw_row_count    bigint NOT NULL,
  raw_content_hash text   NOT NULL,
  PRIMARY KEY (name, version),
  FOREIGN KEY (name, version) REFERENCES flock.datasets (name, version) ON DELETE CASCADE
);
COMMENT ON TABLE flock.dataset_privacy IS 'personal-data marks applied to each snapshot, and the hash of its rows before them';
SELECT pg_catalog.pg_extension_config_dump('flock.dataset_privacy', '');
ALTER TABLE flock.dataset_privacy ENABLE ROW LEVEL SECURITY;
CREATE POLICY dataset_privacy_visible ON flock.dataset_privacy FOR SELECT
  USING (EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = dataset_privacy.name AND d.version = dataset_privacy.version));
REVOKE ALL ON flock.dataset_privacy FROM PUBLIC;
GRANT SELECT ON flock.dataset_privacy TO PUBLIC;

CREATE FUNCTION flock._privacy_record_snapshot(name text, version integer, applied jsonb) RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  INSERT INTO flock.dataset_privacy (name, version, marks, raw_row_count, raw_content_hash)
  SELECT name, version, applied->'marks', (applied->>'raw_row_count')::bigint, applied->>'raw_content_hash'
   WHERE applied IS NOT NULL
$$;
REVOKE ALL ON FUNCTION flock._privacy_record_snapshot(text, integer, jsonb) FROM PUBLIC;

-- One inference log batch with its features' marks applied (pg/src/privacy_mask.cpp): what
-- flock._privacy_hmac, flock._privacy_number_text and the bucketing compute, in one pass over the
-- batch. Takes the key as arguments, so it is no oracle; still only for Flock's own use.
CREATE FUNCTION flock._privacy_mask_batch(actions text[], widths float8[], inner_key bytea, outer_key bytea,
                                          input float8[], input_real real[], input_text text[],
                                          OUT masked_input float8[], OUT masked_real real[], OUT masked_text text[])
  AS 'MODULE_PATHNAME', 'flock_privacy_mask_batch' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
REVOKE ALL ON FUNCTION flock._privacy_mask_batch(text[], float8[], bytea, bytea, float8[], real[], text[]) FROM PUBLIC;

-- The inference log: a BEFORE INSERT trigger, so the audit writer's rows are marked before they
-- are stored. Hashed features move to input_text (the HMAC, hex) with NULL in the numeric arrays;
-- redacted ones are NULL everywhere; generalized ones are bucketed. Only the audit writer's rows
-- are marked: rows pg_restore loads were marked when first stored. A batch of a model without
-- personal inputs costs one index probe.
CREATE FUNCTION flock._privacy_mask_log() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET extra_float_digits = '1' AS $$
DECLARE
  nf integer;
  actions text[];
  widths float8[];
  inner_key bytea;
  outer_key bytea;
  masked record;
BEGIN
  IF NEW.features IS NULL
     OR NOT EXISTS (SELECT 1 FROM flock.model_personal_inputs p WHERE p.model_name = NEW.model_name
                       AND p.model_version = NEW.model_version AND p.action <> 'keep')
     OR (SELECT a.backend_type FROM pg_stat_get_activity(pg_backend_pid()) a) IS DISTINCT FROM 'flock audit writer' THEN
    RETURN NEW;
  END IF;
  nf := array_length(NEW.features, 1);
  SELECT array_agg(coalesce(p.action, 'keep') ORDER BY f.i), array_agg(p.width::float8 ORDER BY f.i)
    INTO actions, widths
    FROM generate_series(1, nf) AS f(i)
    LEFT JOIN flock.model_personal_inputs p ON p.model_name = NEW.model_name AND p.model_version = NEW.model_version
                                           AND p.feature = NEW.features[f.i];
  SELECT k.inner_key, k.outer_key INTO inner_key, outer_key FROM flock._privacy_key k WHERE k.id = 1;
  SELECT * INTO masked FROM flock._privacy_mask_batch(actions, widths, inner_key, outer_key,
                                                      NEW.input, NEW.input_real, NEW.input_text);
  NEW.input := masked.masked_input;
  NEW.input_real := masked.masked_real;
  NEW.input_text := masked.masked_text;
  RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION flock._privacy_mask_log() FROM PUBLIC;
CREATE TRIGGER inference_log_privacy BEFORE INSERT ON flock.inference_log
  FOR EACH ROW EXECUTE FUNCTION flock._privacy_mask_log();

-- ---------------------------------------------------------------------------------------------
-- Retention.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.retention_policies (
  kind    text        NOT NULL CHECK (kind IN ('model', 'dataset')),
  name    text        NOT NULL,
  max_age interval    NOT NULL CHECK (max_age > interval '0'),
  set_by  name        NOT NULL,
  set_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (kind, name)
);
COMMENT ON TABLE flock.retention_policies IS
  'how long a model''s inference log rows and a data set''s snapshot versions are kept (flock.apply_retention drops the rest)';
SELECT pg_catalog.pg_extension_config_dump('flock.retention_policies', '');
REVOKE ALL ON flock.retention_policies FROM PUBLIC;
GRANT SELECT ON flock.retention_policies TO PUBLIC;

-- The pg_cron job that runs flock.apply_retention() in this database, scheduled when pg_cron is
-- installed here (it lives in cron.database_name; elsewhere, schedule it from there with
-- cron.schedule_in_database, as the NOTICE says).
CREATE FUNCTION flock._privacy_schedule() RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  job_name text := 'flock_retention_' || current_database();
  command text := format('SELECT cron.schedule_in_database(%L, %L, %L, %L)', job_name, '17 3 * * *',
                         'SELECT flock.apply_retention()', current_database());
  job bigint;
BEGIN
  IF to_regclass('cron.job') IS NULL THEN
    RAISE NOTICE 'pg_cron is not installed in database %: flock.apply_retention() is not scheduled', current_database()
      USING HINT = format('Schedule it from the pg_cron database (cron.database_name): %s;', command);
    RETURN jsonb_build_object('scheduled', false, 'command', command);
  END IF;
  EXECUTE 'SELECT jobid FROM cron.job WHERE jobname = $1 AND database = $2' INTO job USING job_name, current_database();
  IF job IS NULL THEN
    EXECUTE command INTO job;
  END IF;
  RETURN jsonb_build_object('scheduled', true, 'job', job_name, 'jobid', job);
END $$;
REVOKE ALL ON FUNCTION flock._privacy_schedule() FROM PUBLIC;

CREATE FUNCTION flock._set_retention(kind text, name text, max_age interval) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  result jsonb;
  removed boolean;
BEGIN
  PERFORM flock._require_privacy_admin('set retention');
  IF kind IS NULL OR kind NOT IN ('model', 'dataset') THEN
    RAISE EXCEPTION 'unknown retention kind "%"', kind USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''model'' (its inference log rows) or ''dataset'' (its snapshot versions).';
  END IF;
  IF name IS NULL OR strpos(name, '@') > 0 THEN
    RAISE EXCEPTION 'invalid % name "%"', kind, name USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Retention is per model or data set name (every version), without @.';
  END IF;
  IF max_age IS NOT NULL AND max_age <= interval '0' THEN
    RAISE EXCEPTION 'retention must be positive, not %', max_age USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Pass an interval such as ''90 days''; NULL removes the policy.';
  END IF;
  IF kind = 'model' AND NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = _set_retention.name) THEN
    RAISE EXCEPTION 'model "%" does not exist', name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT DISTINCT name FROM flock.models.';
  END IF;
  IF kind = 'dataset' AND NOT EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = _set_retention.name) THEN
    RAISE EXCEPTION 'data set "%" does not exist', name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT DISTINCT name FROM flock.datasets.';
  END IF;
  IF max_age IS NULL THEN
    DELETE FROM flock.retention_policies p WHERE p.kind = _set_retention.kind AND p.name = _set_retention.name;
    removed := FOUND;
    result := jsonb_build_object('kind', kind, 'name', name, 'max_age', NULL, 'removed', removed);
  ELSE
    INSERT INTO flock.retention_policies AS p (kind, name, max_age, set_by) VALUES (kind, name, max_age, caller)
    ON CONFLICT ON CONSTRAINT retention_policies_pkey DO UPDATE SET max_age = EXCLUDED.max_age, set_by = EXCLUDED.set_by, set_at = now();
    result := jsonb_build_object('kind', kind, 'name', name, 'max_age', max_age::text,
                                 'schedule', flock._privacy_schedule());
  END IF;
  PERFORM flock._privacy_event('set_retention', kind || ':' || name, result);
  RETURN result;
END $$;
REVOKE ALL ON FUNCTION flock._set_retention(text, text, interval) FROM PUBLIC;
CREATE FUNCTION flock.set_retention(kind text, name text, max_age interval) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.set_retention(text, text, interval) IS
  'keeps a model''s inference log rows (kind ''model'') or a data set''s versions (''dataset'') for max_age; NULL removes the policy';

CREATE FUNCTION flock._apply_retention() RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  started timestamptz := now();
  event bigint;
  p record;
  v record;
  part record;
  users text;
  purged jsonb := '[]';
  dropped jsonb := '[]';
  kept jsonb := '[]';
  partitions jsonb := '[]';
  result jsonb;
BEGIN
  PERFORM flock._require_privacy_admin('apply retention');
  event := flock._privacy_event('apply_retention', 'all', NULL);
  FOR p IN SELECT * FROM flock.retention_policies r WHERE r.kind = 'model' ORDER BY r.name LOOP
    FOR v IN WITH gone AS (
               DELETE FROM flock.inference_log l WHERE l.model_name = p.name AND l.logged_at < started - p.max_age
               RETURNING l.model_version, l.n_rows, l.logged_at)
             SELECT g.model_version, sum(g.n_rows) AS predictions, count(*) AS batches, max(g.logged_at) AS newest
               FROM gone g GROUP BY g.model_version ORDER BY g.model_version LOOP
      INSERT INTO flock.privacy_lineage VALUES ('model', p.name || '@' || v.model_version, 'retention_purged', 'retention',
        event::text, clock_timestamp(), caller,
        jsonb_build_object('predictions', v.predictions, 'batches', v.batches, 'before', started - p.max_age));
      purged := purged || jsonb_build_object('model', p.name || '@' || v.model_version, 'predictions', v.predictions);
    END LOOP;
  END LOOP;
  -- Monthly partitions wholly in the past that retention left empty go too (not the default one).
  FOR part IN SELECT c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS bound
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'flock.inference_log'::regclass
                 AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT' LOOP
    IF substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz < started - (SELECT min(r.max_age) FROM flock.retention_policies r WHERE r.kind = 'model')
       AND NOT EXISTS (SELECT 1 FROM flock.inference_log l WHERE l.tableoid = part.rel) THEN
      EXECUTE format('DROP TABLE %s', part.rel);
      partitions := partitions || to_jsonb(part.rel::text);
      INSERT INTO flock.privacy_lineage VALUES ('table', part.rel::text, 'retention_dropped', 'retention',
        event::text, clock_timestamp(), caller, jsonb_build_object('partition', part.bound));
    END IF;
  END LOOP;
  FOR p IN SELECT * FROM flock.retention_policies r WHERE r.kind = 'dataset' ORDER BY r.name LOOP
    FOR v IN SELECT * FROM flock.datasets d WHERE d.name = p.name AND d.created_at < started - p.max_age ORDER BY d.version LOOP
      SELECT string_agg(DISTINCT format('%s@%s', r.model_name, r.model_version), ', ') INTO users
        FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id
       WHERE i.dataset_name = v.name AND i.dataset_version = v.version;
      IF users IS NOT NULL THEN
        -- Training lineage outlives retention only while the models exist: say so every run.
        kept := kept || jsonb_build_object('dataset', v.name || '@' || v.version, 'reason', 'trained on by ' || users);
        RAISE WARNING 'data set %@% is past its retention but kept: models were trained on it (%)', v.name, v.version, users
          USING HINT = 'Drop those model versions (flock.drop_model), or erase subjects from it with flock.erase_subject.';
        CONTINUE;
      END IF;
      EXECUTE format('DROP TABLE IF EXISTS %s', v.table_name);
      DELETE FROM flock.datasets d WHERE d.name = v.name AND d.version = v.version;
      INSERT INTO flock.privacy_lineage VALUES ('dataset', v.name || '@' || v.version, 'retention_dropped', 'retention',
        event::text, clock_timestamp(), caller,
        jsonb_build_object('created_at', v.created_at, 'row_count', v.row_count, 'content_hash', v.content_hash,
                           'max_age', p.max_age::text));
      dropped := dropped || to_jsonb(v.name || '@' || v.version);
    END LOOP;
  END LOOP;
  result := jsonb_build_object('event', event, 'log_purged', purged, 'partitions_dropped', partitions,
                               'datasets_dropped', dropped, 'datasets_kept', kept);
  UPDATE flock.privacy_events e SET detail = result WHERE e.id = event;
  RETURN result;
END $$;
REVOKE ALL ON FUNCTION flock._apply_retention() FROM PUBLIC;
CREATE FUNCTION flock.apply_retention() RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.apply_retention() IS
  'drops inference log rows and data set versions past their retention, recording each drop in lineage (run by pg_cron)';

-- ---------------------------------------------------------------------------------------------
-- Erasure of one data subject.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.dataset_erasures (
  name          text        NOT NULL,
  version       integer     NOT NULL,
  erasure       bigint      NOT NULL,   -- flock.privacy_events.id
  rows_removed  bigint      NOT NULL,
  row_count     bigint      NOT NULL,   -- the snapshot after the erasure
  content_hash  text        NOT NULL,
  erased_by     name        NOT NULL,
  erased_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (name, version, erasure),
  FOREIGN KEY (name, version) REFERENCES flock.datasets (name, version) ON DELETE CASCADE
);
COMMENT ON TABLE flock.dataset_erasures IS 'rows erased from snapshots, with the snapshot''s hash after each erasure';
SELECT pg_catalog.pg_extension_config_dump('flock.dataset_erasures', '');
ALTER TABLE flock.dataset_erasures ENABLE ROW LEVEL SECURITY;
CREATE POLICY dataset_erasures_visible ON flock.dataset_erasures FOR SELECT
  USING (EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = dataset_erasures.name AND d.version = dataset_erasures.version));
REVOKE ALL ON flock.dataset_erasures FROM PUBLIC;
GRANT SELECT ON flock.dataset_erasures TO PUBLIC;

-- The condition a copy's row must meet to hold the subject described by `probe` (column -> raw
-- text): every probed column equal to one of its forms under the copy's mark. NULL when the copy
-- cannot be searched with this probe: a probed column missing or redacted, or none identifying
-- (kept or hashed). `exprs` maps the copy's columns to SQL giving their text; `marks` maps
-- column -> {action, width}.
CREATE FUNCTION flock._privacy_match(probe jsonb, exprs jsonb, marks jsonb) RETURNS text
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  col text;
  action text;
  forms text[];
  conds text[] := '{}';
  identifying boolean := false;
BEGIN
  IF probe IS NULL THEN
    RETURN NULL;
  END IF;
  FOR col IN SELECT k FROM jsonb_object_keys(probe) k ORDER BY k LOOP
    IF NOT exprs ? col THEN
      RETURN NULL;
    END IF;
    action := coalesce(marks->col->>'action', 'keep');
    IF action = 'redact' THEN
      RETURN NULL;
    END IF;
    identifying := identifying OR action IN ('keep', 'hash');
    forms := flock._privacy_candidates(probe->>col, action, (marks->col->>'width')::numeric);
    IF forms IS NULL THEN
      conds := conds || format('%s IS NULL', exprs->>col);
    ELSE
      conds := conds || format('%s = ANY (%L::text[])', exprs->>col, forms);
    END IF;
  END LOOP;
  IF NOT identifying OR cardinality(conds) = 0 THEN
    RETURN NULL;
  END IF;
  RETURN array_to_string(conds, ' AND ');
END $$;
REVOKE ALL ON FUNCTION flock._privacy_match(jsonb, jsonb, jsonb) FROM PUBLIC;

-- Keeps rows `keep` (1-based) of a 2-D array (or elements of a 1-D one).
CREATE FUNCTION flock._privacy_keep_rows(a anyarray, keep integer[]) RETURNS anyarray
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  result a%TYPE;
BEGIN
  IF a IS NULL THEN
    RETURN NULL;
  ELSIF array_ndims(a) = 1 THEN
    EXECUTE 'SELECT array_agg($1[r] ORDER BY r) FROM unnest($2) r' INTO result USING a, keep;
  ELSE
    EXECUTE 'SELECT array_agg(ARRAY(SELECT x FROM unnest($1[r:r][:]) WITH ORDINALITY u(x, i) ORDER BY i) ORDER BY r) '
            'FROM unnest($2) r' INTO result USING a, keep;
  END IF;
  RETURN result;
END $$;

CREATE FUNCTION flock._erase_subject("table" regclass, key jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET extra_float_digits = '1' AS $$
DECLARE
  caller name := flock._caller();
  table_columns text[];
  bad text;
  conds text;
  probes jsonb;            -- the key, then the subject's rows in the table (column -> text)
  probe jsonb;
  erasure bigint;
  d record;
  snap_columns text[];
  exprs jsonb;
  marks jsonb;
  cond text;
  matched_by text;
  n bigint;
  h record;
  g record;
  at_row record;
  l flock.inference_log;
  hits integer[];
  keep integer[];
  nf integer;
  row_cond text;
  ds_report jsonb := '[]';
  log_report jsonb := '[]';
  unsearched jsonb := '[]';
  log_removed bigint;
  models jsonb;
  erased_datasets text[] := '{}';
  result jsonb;
BEGIN
  PERFORM flock._require_privacy_admin('erase data subjects');
  IF "table" IS NULL OR key IS NULL OR jsonb_typeof(key) <> 'object' OR key = '{}' THEN
    RAISE EXCEPTION 'the key must be a non-empty JSON object' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Name the subject by its key columns, e.g. flock.erase_subject(''customers'', ''{"customer_id": 42}'').';
  END IF;
  SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO table_columns FROM pg_attribute a
   WHERE a.attrelid = "table" AND a.attnum > 0 AND NOT a.attisdropped;
  SELECT k INTO bad FROM jsonb_object_keys(key) k WHERE NOT k = ANY (table_columns) ORDER BY k LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'key column "%" is not a column of relation %', bad, "table" USING ERRCODE = 'undefined_column',
      HINT = format('Columns of %s: %s.', "table", (SELECT string_agg(quote_ident(c), ', ') FROM unnest(table_columns) c));
  END IF;
  SELECT k INTO bad FROM jsonb_each(key) e(k, v) WHERE jsonb_typeof(v) NOT IN ('string', 'number', 'boolean') LIMIT 1;
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'key column "%" has no scalar value', bad USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Key values are JSON strings, numbers or booleans (a NULL identifies no one).';
  END IF;

  -- The subject's rows still in the table find copies that hold its other columns but not the key.
  SELECT string_agg(format('t.%I = %L::%s', e.k, e.v, format_type(a.atttypid, a.atttypmod)), ' AND ')
    INTO conds
    FROM jsonb_each_text(key) e(k, v) JOIN pg_attribute a ON a.attrelid = "table" AND a.attname = e.k;
  EXECUTE format('SELECT coalesce(jsonb_agg((SELECT jsonb_object_agg(j.k, j.v) FROM jsonb_each_text(to_jsonb(t)) j(k, v)'
                 ' WHERE j.v IS NOT NULL)), ''[]'') FROM %s t WHERE %s', "table", conds) INTO probes;
  probes := jsonb_build_array((SELECT jsonb_object_agg(e.k, e.v) FROM jsonb_each_text(key) e(k, v))) || probes;
  erasure := flock._privacy_event('erase', "table"::text, NULL);

  -- Snapshots whose query read the table (lineage), searched by the key, else by the subject's rows.
  FOR d IN SELECT x.* FROM flock.datasets x
            WHERE "table" IN (SELECT * FROM flock._privacy_source_tables(x.sources))
              AND to_regclass(x.table_name) IS NOT NULL
            ORDER BY x.name, x.version LOOP
    SELECT array_agg(a.attname::text), jsonb_object_agg(a.attname, format('t.%I::text', a.attname))
      INTO snap_columns, exprs FROM pg_attribute a
     WHERE a.attrelid = d.table_name::regclass AND a.attnum > 0 AND NOT a.attisdropped;
    SELECT coalesce(jsonb_object_agg(m->>'column', m), '{}') INTO marks
      FROM flock.dataset_privacy p CROSS JOIN LATERAL jsonb_array_elements(p.marks) m
     WHERE p.name = d.name AND p.version = d.version;
    cond := flock._privacy_match(probes->0, exprs, marks);
    matched_by := 'key';
    IF cond IS NULL AND jsonb_array_length(probes) > 1 THEN
      -- By the subject's rows: every column the snapshot shares with the table.
      SELECT string_agg('(' || c || ')', ' OR ') INTO cond
        FROM (SELECT flock._privacy_match((SELECT jsonb_object_agg(j.k, j.v) FROM jsonb_each(pr) j(k, v)
                                            WHERE j.k = ANY (snap_columns) AND coalesce(marks->j.k->>'action', '') <> 'redact'),
                                          exprs, marks) AS c
                FROM jsonb_array_elements(probes) WITH ORDINALITY AS x(pr, i) WHERE x.i > 1) m
       WHERE m.c IS NOT NULL;
      matched_by := 'subject rows';
    END IF;
    IF cond IS NULL THEN
      unsearched := unsearched || jsonb_build_object('dataset', d.name || '@' || d.version,
        'reason', 'the snapshot holds neither the key columns (unredacted) nor the subject''s row');
      CONTINUE;
    END IF;
    EXECUTE format('ALTER TABLE %s DISABLE TRIGGER immutable', d.table_name);
    EXECUTE format('WITH gone AS (DELETE FROM %s t WHERE %s RETURNING 1) SELECT count(*) FROM gone', d.table_name, cond) INTO n;
    EXECUTE format('ALTER TABLE %s ENABLE TRIGGER immutable', d.table_name);
    IF n > 0 THEN
      SELECT * INTO h FROM flock._table_hash(d.table_name::regclass);
      INSERT INTO flock.dataset_erasures (name, version, erasure, rows_removed, row_count, content_hash, erased_by)
      VALUES (d.name, d.version, erasure, n, h.row_count, h.content_hash, caller);
      INSERT INTO flock.privacy_lineage VALUES ('dataset', d.name || '@' || d.version, 'erased', 'erasure',
        erasure::text, clock_timestamp(), caller,
        jsonb_build_object('table', "table"::text, 'rows', n, 'content_hash', h.content_hash));
      erased_datasets := erased_datasets || (d.name || '@' || d.version);
    END IF;
    ds_report := ds_report || jsonb_build_object('dataset', d.name || '@' || d.version, 'rows_removed', n,
                                                 'matched_by', matched_by);
  END LOOP;

  -- The inference log, per model version and feature list: by the key when every key column is a
  -- recorded feature, else by the subject's rows when every feature is a column of the table.
  FOR g IN SELECT DISTINCT x.model_name, x.model_version, x.features FROM flock.inference_log x
            WHERE x.features IS NOT NULL ORDER BY 1, 2 LOOP
    nf := array_length(g.features, 1);
    SELECT coalesce(jsonb_object_agg(p.feature, jsonb_build_object('action', p.action, 'width', p.width)), '{}') INTO marks
      FROM flock.model_personal_inputs p WHERE p.model_name = g.model_name AND p.model_version = g.model_version;
    row_cond := NULL;
    -- A feature's recorded text at row r: whichever array holds it.
    SELECT jsonb_object_agg(g.features[f], format('coalesce($1.input_text[r][%s], $1.input_real[r][%s]::text, '
                                                  '$1.input[r][%s]::text)', f, f, f))
      INTO exprs FROM generate_series(1, nf) f;
    -- Features are named by the model, columns by the table: matched case-insensitively.
    probe := (SELECT jsonb_object_agg(f.name, probes->0->>k.k)
                FROM jsonb_object_keys(probes->0) k(k)
                JOIN unnest(g.features) f(name) ON lower(f.name) = lower(k.k));
    IF (SELECT count(*) FROM jsonb_object_keys(probes->0)) = (SELECT count(*) FROM jsonb_object_keys(coalesce(probe, '{}'))) THEN
      row_cond := flock._privacy_match(probe, exprs, marks);
    END IF;
    IF row_cond IS NULL AND jsonb_array_length(probes) > 1
       AND (SELECT bool_and(EXISTS (SELECT 1 FROM unnest(table_columns) c WHERE lower(c) = lower(f)))
              FROM unnest(g.features) f) THEN
      SELECT string_agg('(' || c || ')', ' OR ') INTO row_cond
        FROM (SELECT flock._privacy_match((SELECT jsonb_object_agg(f.name, j.v) FROM jsonb_each_text(pr) j(k, v)
                                            JOIN unnest(g.features) f(name) ON lower(f.name) = lower(j.k)
                                           WHERE coalesce(marks->f.name->>'action', '') <> 'redact'),
                                          exprs, marks) AS c
                FROM jsonb_array_elements(probes) WITH ORDINALITY AS x(pr, i) WHERE x.i > 1) m
       WHERE m.c IS NOT NULL;
    END IF;
    IF row_cond IS NULL THEN
      CONTINUE;
    END IF;
    log_removed := 0;
    FOR at_row IN SELECT x.tableoid AS rel, x.ctid AS row_id FROM flock.inference_log x
                   WHERE x.model_name = g.model_name AND x.model_version = g.model_version AND x.features = g.features LOOP
      SELECT x.* INTO l FROM flock.inference_log x WHERE x.tableoid = at_row.rel AND x.ctid = at_row.row_id;
      EXECUTE format('SELECT array_agg(r ORDER BY r) FROM generate_series(1, $1.n_rows) r WHERE %s', row_cond)
        INTO hits USING l;
      IF hits IS NULL THEN
        CONTINUE;
      END IF;
      keep := ARRAY(SELECT r FROM generate_series(1, l.n_rows) r WHERE NOT r = ANY (hits) ORDER BY r);
      IF cardinality(keep) = 0 THEN
        DELETE FROM flock.inference_log x WHERE x.tableoid = at_row.rel AND x.ctid = at_row.row_id;
      ELSE
        UPDATE flock.inference_log x
           SET n_rows = cardinality(keep), input = flock._privacy_keep_rows(l.input, keep),
               input_real = flock._privacy_keep_rows(l.input_real, keep),
               input_text = flock._privacy_keep_rows(l.input_text, keep),
               output = flock._privacy_keep_rows(l.output, keep),
               output_label = flock._privacy_keep_rows(l.output_label, keep)
         WHERE x.tableoid = at_row.rel AND x.ctid = at_row.row_id;
      END IF;
      log_removed := log_removed + cardinality(hits);
    END LOOP;
    IF log_removed > 0 THEN
      INSERT INTO flock.privacy_lineage VALUES ('model', g.model_name || '@' || g.model_version, 'erased', 'erasure',
        erasure::text, clock_timestamp(), caller, jsonb_build_object('table', "table"::text, 'predictions', log_removed));
      log_report := log_report || jsonb_build_object('model', g.model_name || '@' || g.model_version,
                                                     'predictions_removed', log_removed);
    END IF;
  END LOOP;

  -- Model versions trained on snapshots that held the subject: their owners should retrain.
  SELECT coalesce(jsonb_agg(DISTINCT r.model_name || '@' || r.model_version), '[]') INTO models
    FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id
   WHERE (i.dataset_name || '@' || i.dataset_version) = ANY (erased_datasets);
  result := jsonb_build_object('erasure', erasure, 'table', "table"::text,
                               'key_columns', (SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys(key) k),
                               'subject_rows_in_table', jsonb_array_length(probes) - 1,
                               'datasets', ds_report, 'inference_log', log_report,
                               'not_searchable', unsearched, 'models_trained_on_subject', models);
  UPDATE flock.privacy_events e SET detail = result WHERE e.id = erasure;
  RETURN result;
END $$;
REVOKE ALL ON FUNCTION flock._erase_subject(regclass, jsonb) FROM PUBLIC;
CREATE FUNCTION flock.erase_subject("table" regclass, key jsonb) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.erase_subject(regclass, jsonb) IS
  'removes one data subject''s rows from every snapshot and inference log entry holding them; returns what was erased and which model versions were trained on them';
