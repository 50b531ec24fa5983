-- Flock inference log: the table the audit writer fills. Before 20_audit.sql, whose view reads it.

-- ---------------------------------------------------------------------------------------------
-- Inference audit log, filled by the prediction functions for models with an audit policy (see
-- 20_audit.sql): the flock audit writer (a background worker) inserts one row per batch of one
-- statement, with the inputs and outputs as arrays, in transactions of its own. Partitioned by time:
-- flock.inference_log_partition(month) adds a month, DROP TABLE of a month purges it.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.inference_log (
  logged_at     timestamptz NOT NULL DEFAULT statement_timestamp(),  -- the statement's start
  role          name        NOT NULL,        -- the session's role (outside SECURITY DEFINER functions)
  model_name    text        NOT NULL,
  model_version integer     NOT NULL,
  query_id      bigint,                      -- the statement's query id
  function      text        NOT NULL DEFAULT 'predict'
                CHECK (function IN ('predict', 'predict_proba', 'predict_label', 'predict_tensor')),
  n_rows        integer     NOT NULL DEFAULT 1 CHECK (n_rows > 0),
  features      text[],                      -- feature names (NULL: the model has none)
  input         float8[],                    -- n_rows x features: numeric features (NULL: missing or text)
  input_text    text[],                      -- n_rows x features: text features, for models that take any
  output        float8[],                    -- n_rows x width: predict (width 1), predict_proba, predict_tensor
  output_label  text[],                      -- n_rows: predict_label
  input_real    real[]                       -- instead of input, for models that take real (float32):
                                             -- the values as the model saw them, in half the bytes
) PARTITION BY RANGE (logged_at);
COMMENT ON TABLE flock.inference_log IS
  'audited predictions, one row per batch (flock.inference_log_rows: one per prediction); rows with the same logged_at and query_id are one statement';
-- Arrays stored uncompressed: pglz over feature values cost the writer 2-3x its time for ~40% of
-- the bytes (bench/audit_bench.py); partitions inherit the setting.
ALTER TABLE flock.inference_log ALTER COLUMN input SET STORAGE EXTERNAL, ALTER COLUMN input_text SET STORAGE EXTERNAL,
  ALTER COLUMN output SET STORAGE EXTERNAL, ALTER COLUMN output_label SET STORAGE EXTERNAL,
  ALTER COLUMN input_real SET STORAGE EXTERNAL;
CREATE TABLE flock.inference_log_default PARTITION OF flock.inference_log DEFAULT;
-- Indexes per partition, not on the parent: an index on the (extension-owned) parent would be
-- created again on each partition pg_restore attaches, clashing with the partition's dumped index.
CREATE INDEX inference_log_default_model ON flock.inference_log_default (model_name, model_version, logged_at);
SELECT pg_catalog.pg_extension_config_dump('flock.inference_log_default', '');
ALTER TABLE flock.inference_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY inference_log_visible ON flock.inference_log FOR SELECT
  USING (role = current_user
         OR model_name IN (SELECT p.name FROM flock.model_privileges p WHERE p.privilege = 'manage'));
REVOKE ALL ON flock.inference_log FROM PUBLIC;
REVOKE ALL ON flock.inference_log_default FROM PUBLIC;
GRANT SELECT ON flock.inference_log TO PUBLIC;

CREATE FUNCTION flock.inference_log_partition(month date) RETURNS regclass
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  month_start date := date_trunc('month', month)::date;
  part text := format('flock.%I', 'inference_log_' || to_char(month, 'YYYY_MM'));
BEGIN
  IF to_regclass(part) IS NULL THEN
    EXECUTE format('CREATE TABLE %s PARTITION OF flock.inference_log FOR VALUES FROM (%L) TO (%L)',
                   part, month_start::timestamptz, (month_start + interval '1 month')::timestamptz);
    EXECUTE format('CREATE INDEX ON %s (model_name, model_version, logged_at)', part);
    EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', part);
  END IF;
  RETURN part::regclass;
END $$;
REVOKE ALL ON FUNCTION flock.inference_log_partition(date) FROM PUBLIC;
COMMENT ON FUNCTION flock.inference_log_partition(date) IS
  'creates the inference log partition of the month of `month` (if missing) and returns it';
