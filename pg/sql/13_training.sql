-- Flock training capture: how a model version was trained, and the data set versions it read.

-- ---------------------------------------------------------------------------------------------
-- Training capture.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.training_runs (
  id            bigserial   PRIMARY KEY,
  run_id        uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  model_name    text        NOT NULL,
  model_version integer     NOT NULL,
  model_sha256  text        NOT NULL,
  code          text,
  code_sha256   text,
  code_ref      text,
  params        jsonb       NOT NULL DEFAULT '{}',
  metrics       jsonb       NOT NULL DEFAULT '{}',
  environment   jsonb       NOT NULL DEFAULT '{}',
  logged_by     name        NOT NULL,
  logged_at     timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (model_name, model_version) REFERENCES flock.models (name, version) ON DELETE CASCADE
);
COMMENT ON TABLE flock.training_runs IS 'how a model version was trained: code, parameters, metrics, environment';
SELECT pg_catalog.pg_extension_config_dump('flock.training_runs', '');
SELECT pg_catalog.pg_extension_config_dump('flock.training_runs_id_seq', '');
ALTER TABLE flock.training_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY training_runs_visible ON flock.training_runs FOR SELECT
  USING (model_name IN (SELECT p.name FROM flock.model_privileges p));
REVOKE ALL ON flock.training_runs FROM PUBLIC;
GRANT SELECT ON flock.training_runs TO PUBLIC;

CREATE TABLE flock.training_inputs (
  run_id          bigint  NOT NULL REFERENCES flock.training_runs (id) ON DELETE CASCADE,
  dataset_name    text    NOT NULL,
  dataset_version integer NOT NULL,
  PRIMARY KEY (run_id, dataset_name, dataset_version),
  FOREIGN KEY (dataset_name, dataset_version) REFERENCES flock.datasets (name, version)
);
COMMENT ON TABLE flock.training_inputs IS 'the data set versions a training run read';
SELECT pg_catalog.pg_extension_config_dump('flock.training_inputs', '');
ALTER TABLE flock.training_inputs ENABLE ROW LEVEL SECURITY;
CREATE POLICY training_inputs_visible ON flock.training_inputs FOR SELECT
  USING (run_id IN (SELECT r.id FROM flock.training_runs r));
REVOKE ALL ON flock.training_inputs FROM PUBLIC;
GRANT SELECT ON flock.training_inputs TO PUBLIC;

CREATE FUNCTION flock._log_training(model_ref text, datasets text[] DEFAULT NULL, code text DEFAULT NULL,
                                   code_ref text DEFAULT NULL, params jsonb DEFAULT NULL, metrics jsonb DEFAULT NULL,
                                   environment jsonb DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  m flock.models;
  ds_ref text;
  ds_name text;
  ds record;
  run bigint;
BEGIN
  IF model_ref IS NULL THEN
    RAISE EXCEPTION 'model reference is NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM flock._require_manage(split_part(model_ref, '@', 1), 'log training');
  m := flock._resolve(model_ref);
  IF jsonb_typeof(coalesce(params, '{}')) <> 'object' OR jsonb_typeof(coalesce(metrics, '{}')) <> 'object'
     OR jsonb_typeof(coalesce(environment, '{}')) <> 'object' THEN
    RAISE EXCEPTION 'params, metrics and environment must be JSON objects' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'e.g. params => ''{"max_depth": 3}'', metrics => ''{"accuracy": 0.97}''.';
  END IF;
  INSERT INTO flock.training_runs (model_name, model_version, model_sha256, code, code_sha256, code_ref,
                                   params, metrics, environment, logged_by)
  VALUES (m.name, m.version, m.sha256, code, encode(sha256(convert_to(code, 'UTF8')), 'hex'), code_ref,
          coalesce(params, '{}'), coalesce(metrics, '{}'), coalesce(environment, '{}'), caller)
  RETURNING id INTO run;
  FOREACH ds_ref IN ARRAY coalesce(datasets, '{}') LOOP
    ds_name := split_part(ds_ref, '@', 1);
    IF ds_ref IS NULL OR (strpos(ds_ref, '@') > 0 AND substr(ds_ref, length(ds_name) + 2) !~ '^[0-9]{1,9}$') THEN
      RAISE EXCEPTION 'invalid data set reference "%"', ds_ref USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Use ''name'' for the latest version or ''name@N'' for version N.';
    END IF;
    SELECT d.name, d.version INTO ds FROM flock.datasets d
     WHERE d.name = ds_name
       AND (strpos(ds_ref, '@') = 0 OR d.version = substr(ds_ref, length(ds_name) + 2)::integer)
       AND (flock._sees_all(caller) OR has_table_privilege(caller, to_regclass(d.table_name), 'SELECT'))
     ORDER BY d.version DESC LIMIT 1;
    IF NOT FOUND THEN
      IF flock._sees_all(caller) THEN
        RAISE EXCEPTION 'data set "%" does not exist', ds_ref USING ERRCODE = 'undefined_object',
          HINT = 'See SELECT name, version FROM flock.datasets; take one with flock.snapshot_dataset.';
      END IF;
      RAISE EXCEPTION 'permission denied for data set "%"', ds_ref USING ERRCODE = 'insufficient_privilege',
        DETAIL = 'Either the data set does not exist or you may not read it; the two cases give the same error.';
    END IF;
    INSERT INTO flock.training_inputs (run_id, dataset_name, dataset_version)
    VALUES (run, ds.name, ds.version) ON CONFLICT DO NOTHING;
  END LOOP;
  RETURN run;
END $$;
REVOKE ALL ON FUNCTION flock._log_training(text, text[], text, text, jsonb, jsonb, jsonb) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._log_training.
CREATE FUNCTION flock.log_training(model_ref text, datasets text[] DEFAULT NULL, code text DEFAULT NULL,
                                   code_ref text DEFAULT NULL, params jsonb DEFAULT NULL, metrics jsonb DEFAULT NULL,
                                   environment jsonb DEFAULT NULL) RETURNS bigint
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.log_training(text, text[], text, text, jsonb, jsonb, jsonb) IS
  'records how a model version was trained (data set versions, code, parameters, metrics, environment); returns the run id';
