-- Flock 0.1.0: the model type, the model catalog and prediction functions.
\echo Use "CREATE EXTENSION flock" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- The model type: a validated, serialized model (ONNX / ONNX-ML protobuf or XGBoost JSON).
-- Its text form is bytea's hex form, so pg_dump/pg_restore round-trip it; input validates.
-- ---------------------------------------------------------------------------------------------
GRANT USAGE ON SCHEMA flock TO PUBLIC;

CREATE TYPE flock.model;

CREATE FUNCTION flock.model_in(cstring) RETURNS flock.model
  AS 'MODULE_PATHNAME', 'flock_model_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.model_out(flock.model) RETURNS cstring
  AS 'MODULE_PATHNAME', 'flock_model_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.model_recv(internal) RETURNS flock.model
  AS 'MODULE_PATHNAME', 'flock_model_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.model_send(flock.model) RETURNS bytea
  AS 'MODULE_PATHNAME', 'flock_model_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE flock.model (
  INPUT = flock.model_in,
  OUTPUT = flock.model_out,
  RECEIVE = flock.model_recv,
  SEND = flock.model_send,
  INTERNALLENGTH = VARIABLE,
  ALIGNMENT = int4,
  STORAGE = extended
);
COMMENT ON TYPE flock.model IS 'a validated ONNX/ONNX-ML or XGBoost JSON model';

-- bytes::flock.model validates the bytes (format sniffed); flock.model::bytea gives them back.
CREATE FUNCTION flock.model(bytea) RETURNS flock.model
  AS 'MODULE_PATHNAME', 'flock_model_from_bytea' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE CAST (bytea AS flock.model) WITH FUNCTION flock.model(bytea) AS ASSIGNMENT;
CREATE CAST (flock.model AS bytea) WITHOUT FUNCTION AS ASSIGNMENT;

CREATE FUNCTION flock.model_format(flock.model) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_model_format' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.model_sha256(flock.model) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_model_sha256' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock.model_signature(flock.model) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_model_signature' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- Validates bytes in the given format and embeds feature names when given.
CREATE FUNCTION flock._prepare_model(model bytea, format text, features text[]) RETURNS flock.model
  AS 'MODULE_PATHNAME', 'flock_prepare_model' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;
-- The role Flock acts for: current_user at the call of the Flock function being run (see
-- pg/src/identity.cpp), even inside the SECURITY DEFINER implementations; current_user elsewhere.
CREATE FUNCTION flock._caller() RETURNS name
  AS 'MODULE_PATHNAME', 'flock_caller' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
-- Sends a cache invalidation for flock.models to every backend (run by a trigger).
CREATE FUNCTION flock._catalog_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'flock_catalog_changed' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- ---------------------------------------------------------------------------------------------
-- The catalog. Registered versions are immutable; only the description may change.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.models (
  name        text        NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$'),
  version     integer     NOT NULL CHECK (version > 0),
  model       flock.model NOT NULL,
  format      text        NOT NULL CHECK (format IN ('onnx', 'xgboost')),
  sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  signature   jsonb       NOT NULL,
  created_by  name        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  description text,
  PRIMARY KEY (name, version)
);
COMMENT ON TABLE flock.models IS 'registered model versions (immutable)';
-- Model bytes are TOASTed with lz4 where the server has it: every backend's and parallel worker's
-- first read of a 10 MB forest took 44-64 ms decompressing pglz, 10-15 ms with lz4.
DO $$
BEGIN
  ALTER TABLE flock.models ALTER COLUMN model SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  NULL;  -- a server built without lz4 keeps pglz
END
$$;
SELECT pg_catalog.pg_extension_config_dump('flock.models', '');
REVOKE ALL ON flock.models FROM PUBLIC;
GRANT SELECT ON flock.models TO PUBLIC;

CREATE FUNCTION flock._forbid_version_change() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NEW.name IS DISTINCT FROM OLD.name OR NEW.version IS DISTINCT FROM OLD.version
     OR NEW.model::bytea IS DISTINCT FROM OLD.model::bytea OR NEW.sha256 IS DISTINCT FROM OLD.sha256
     OR NEW.format IS DISTINCT FROM OLD.format OR NEW.signature IS DISTINCT FROM OLD.signature
     OR NEW.created_by IS DISTINCT FROM OLD.created_by OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
    RAISE EXCEPTION 'model version %@% is immutable', OLD.name, OLD.version
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Register a new version with flock.register_model; only the description may change.';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER models_immutable BEFORE UPDATE ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._forbid_version_change();
CREATE TRIGGER models_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flock.models
  FOR EACH STATEMENT EXECUTE FUNCTION flock._catalog_changed();

-- flock._resolve(ref), reference -> catalog row, is defined in 11_aliases.sql, after the aliases it
-- reads; the functions here call it only when they run.

-- ---------------------------------------------------------------------------------------------
-- Registering and dropping models.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._register_model(name text, model bytea, format text DEFAULT 'auto',
                                     description text DEFAULT NULL, features text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  prepared flock.model;
  next_version integer;
BEGIN
  IF name IS NULL OR model IS NULL THEN
    RAISE EXCEPTION 'model name and bytes must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION 'invalid model name "%"', name USING ERRCODE = 'invalid_name',
      HINT = 'A model name starts with a letter or underscore and has up to 63 letters, digits, _ . or -.';
  END IF;
  prepared := flock._prepare_model(model, coalesce(format, 'auto'), features);
  -- Serialize registrations of one name so versions count up without gaps or clashes.
  PERFORM pg_advisory_xact_lock(hashtext('flock.models'), hashtext(name));
  SELECT coalesce(max(m.version), 0) + 1 INTO next_version FROM flock.models m WHERE m.name = _register_model.name;
  INSERT INTO flock.models (name, version, model, format, sha256, signature, created_by, description)
  VALUES (name, next_version, prepared, flock.model_format(prepared), flock.model_sha256(prepared),
          flock.model_signature(prepared), flock._caller(), description);
  RETURN name || '@' || next_version;
END $$;
REVOKE ALL ON FUNCTION flock._register_model(text, bytea, text, text, text[]) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._register_model.
CREATE FUNCTION flock.register_model(name text, model bytea, format text DEFAULT 'auto',
                                     description text DEFAULT NULL, features text[] DEFAULT NULL) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.register_model(text, bytea, text, text, text[]) IS
  'validates and registers a model as the next version of name; returns ''name@version''';

CREATE FUNCTION flock._drop_model(name text, version integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  is_super boolean;
  n integer;
BEGIN
  SELECT rolsuper INTO is_super FROM pg_roles WHERE rolname = caller;
  -- A model the caller may not use gets the very error of a missing one (flock._model_not_found,
  -- in 10_access.sql): dropping tells nothing about models the caller cannot see.
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = _drop_model.name)
     OR NOT (flock._may(caller, _drop_model.name, 'use') OR flock._sees_all(caller)) THEN
    PERFORM flock._model_not_found(_drop_model.name, caller);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = _drop_model.name
                 AND (_drop_model.version IS NULL OR m.version = _drop_model.version)) THEN
    RAISE EXCEPTION 'model "%" has no version %', name, version USING ERRCODE = 'undefined_object',
      HINT = format('Versions of "%s": %s.', name,
                    (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM flock.models m WHERE m.name = _drop_model.name));
  END IF;
  IF NOT coalesce(is_super, false) AND EXISTS (
       SELECT 1 FROM flock.models m WHERE m.name = _drop_model.name
       AND (_drop_model.version IS NULL OR m.version = _drop_model.version) AND m.created_by <> caller) THEN
    RAISE EXCEPTION 'permission denied to drop model "%"', name || coalesce('@' || version, '')
      USING ERRCODE = 'insufficient_privilege', HINT = 'Only the role that registered a model, or a superuser, may drop it.';
  END IF;
  DELETE FROM flock.models m WHERE m.name = _drop_model.name
    AND (_drop_model.version IS NULL OR m.version = _drop_model.version);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION flock._drop_model(text, integer) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._drop_model.
CREATE FUNCTION flock.drop_model(name text, version integer DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.drop_model(text, integer) IS
  'drops one version, or every version when version is NULL; returns how many were dropped';

-- Which inputs of a model version are personal data, {feature: {class, action, width, columns}}
-- (the marks of pg/sql/50_privacy.sql, recorded in flock.model_personal_inputs). PL/pgSQL, so it may
-- name that table, which this script creates further down.
CREATE FUNCTION flock._personal_inputs_of(model_name text, model_version integer) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN coalesce((SELECT jsonb_object_agg(p.feature, jsonb_strip_nulls(jsonb_build_object(
                     'class', p.class, 'action', p.action, 'width', p.width, 'columns', p.columns)))
                     FROM flock.model_personal_inputs p
                    WHERE p.model_name = _personal_inputs_of.model_name
                      AND p.model_version = _personal_inputs_of.model_version), '{}');
END $$;

CREATE FUNCTION flock.model_info(model text) RETURNS jsonb
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT jsonb_build_object('name', m.name, 'version', m.version, 'ref', m.name || '@' || m.version,
                            'sha256', m.sha256,
                            'size_bytes', (SELECT octet_length(s.model::bytea) FROM flock.models s
                                            WHERE s.name = m.name AND s.version = m.version),
                            'created_by', m.created_by, 'created_at', m.created_at,
                            'description', m.description) || m.signature
         || jsonb_build_object('personal_inputs', flock._personal_inputs_of(m.name, m.version))
  FROM flock._resolve(model) m
$$;

CREATE FUNCTION flock.model_info(model flock.model) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT jsonb_build_object('sha256', flock.model_sha256(model), 'size_bytes', octet_length(model::bytea))
         || flock.model_signature(model)
$$;

-- ---------------------------------------------------------------------------------------------
-- Prediction. A name means its latest version, 'name@N' a given version. A record binds by
-- column name (or by column order for a model without feature names), an array by position.
-- STABLE: they read the catalog. COST 1, PostgreSQL's default for C, kept on purpose: the planner
-- hook batches calls made in a scan's target list; at a cost above 10 PostgreSQL would postpone the
-- calls of an ORDER BY ... LIMIT query above its Sort (make_sort_input_target), where each row is
-- scored alone. Changing it is a plan change, to be measured with bench/ first.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock.predict(model text, input record) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict(model text, features float4[]) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict(model flock.model, input record) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict(model flock.model, features float4[]) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_predict' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;

CREATE FUNCTION flock.predict_proba(model text, input record) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_proba(model text, features float4[]) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_proba(model flock.model, input record) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_proba(model flock.model, features float4[]) RETURNS float8[]
  AS 'MODULE_PATHNAME', 'flock_predict_proba' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;

CREATE FUNCTION flock.predict_label(model text, input record) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_label(model text, features float4[]) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_label(model flock.model, input record) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_label(model flock.model, features float4[]) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_predict_label' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;

-- The model's raw output for one row (its first float output), shaped as the output past the
-- batch dimension: for models whose output is not a single score.
CREATE FUNCTION flock.predict_tensor(model text, input record) RETURNS float4[]
  AS 'MODULE_PATHNAME', 'flock_predict_tensor' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_tensor(model text, features float4[]) RETURNS float4[]
  AS 'MODULE_PATHNAME', 'flock_predict_tensor' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_tensor(model flock.model, input record) RETURNS float4[]
  AS 'MODULE_PATHNAME', 'flock_predict_tensor' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;
CREATE FUNCTION flock.predict_tensor(model flock.model, features float4[]) RETURNS float4[]
  AS 'MODULE_PATHNAME', 'flock_predict_tensor' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1;

-- This backend's compiled-model cache: entries, compiles, hits, and catalog resolutions. PARALLEL
-- RESTRICTED: in a parallel worker it would report the worker's cache, not the session's.
CREATE FUNCTION flock.cache_stats() RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_cache_stats' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED;
