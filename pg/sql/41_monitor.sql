-- Flock monitoring and fairness (issue 14): drift between a baseline and current data, drift over
-- windows of the inference log (stored, scheduled with pg_cron), fairness metrics by group.
-- Everything here runs as the calling role (no SECURITY DEFINER): it reads only what the caller
-- may read (data set tables, queries, the inference log through its row security). The statistics
-- are computed in core (core/src/monitor/) by the C functions flock._drift_numeric, ... below.

-- ---------------------------------------------------------------------------------------------
-- The statistics (C). Arrays in; NULL, NaN and infinite elements are left out.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._drift_numeric(baseline float8[], current float8[], OUT n_baseline bigint, OUT n_current bigint,
                                     OUT psi float8, OUT psi_bins integer, OUT ks_statistic float8,
                                     OUT ks_pvalue float8, OUT ks_method text)
  AS 'MODULE_PATHNAME', 'flock_drift_numeric' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flock._drift_numeric(float8[], float8[]) IS
  'PSI on the baseline''s deciles and the two-sample Kolmogorov-Smirnov test of two samples';
CREATE FUNCTION flock._drift_categorical(baseline text[], current text[], OUT n_baseline bigint, OUT n_current bigint,
                                         OUT psi float8, OUT categories integer, OUT chi2 float8, OUT chi2_dof bigint,
                                         OUT chi2_pvalue float8)
  AS 'MODULE_PATHNAME', 'flock_drift_categorical' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION flock._drift_categorical(text[], text[]) IS
  'PSI over categories and Pearson''s chi-squared test of homogeneity of two samples';
CREATE FUNCTION flock._fairness_classification(groups integer[], y_true boolean[], y_pred boolean[])
  RETURNS TABLE(group_no integer, metric text, value float8)
  AS 'MODULE_PATHNAME', 'flock_fairness_classification' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION flock._fairness_regression(groups integer[], y_true float8[], y_pred float8[])
  RETURNS TABLE(group_no integer, metric text, value float8)
  AS 'MODULE_PATHNAME', 'flock_fairness_regression' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- How many elements of a float8[] the statistics use (not NULL, NaN or infinite).
CREATE FUNCTION flock._usable_count(a float8[]) RETURNS bigint
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT count(*) FROM unnest(a) v WHERE v IS NOT NULL AND v NOT IN ('NaN', 'Infinity', '-Infinity')
$$;

-- One drift row's statistics from either numeric or categorical samples; drifted when
-- PSI > psi_threshold or the test's p-value < p_threshold.
CREATE FUNCTION flock._drift_stats(kind text, base_num float8[], cur_num float8[], base_text text[], cur_text text[],
                                   psi_threshold float8, p_threshold float8,
                                   OUT n_baseline bigint, OUT n_current bigint, OUT psi float8,
                                   OUT ks_statistic float8, OUT ks_pvalue float8,
                                   OUT chi2 float8, OUT chi2_dof bigint, OUT chi2_pvalue float8, OUT drifted boolean)
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  r record;
BEGIN
  IF kind = 'numeric' THEN
    r := flock._drift_numeric(base_num, cur_num);
    n_baseline := r.n_baseline; n_current := r.n_current; psi := r.psi;
    ks_statistic := r.ks_statistic; ks_pvalue := r.ks_pvalue;
    drifted := r.psi > psi_threshold OR r.ks_pvalue < p_threshold;
  ELSE
    r := flock._drift_categorical(base_text, cur_text);
    n_baseline := r.n_baseline; n_current := r.n_current; psi := r.psi;
    chi2 := r.chi2; chi2_dof := r.chi2_dof; chi2_pvalue := r.chi2_pvalue;
    drifted := r.psi > psi_threshold OR r.chi2_pvalue < p_threshold;
  END IF;
END $$;

CREATE FUNCTION flock._check_thresholds(psi_threshold float8, p_threshold float8) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF psi_threshold IS NULL OR psi_threshold = 'NaN' OR psi_threshold < 0 THEN
    RAISE EXCEPTION 'psi_threshold must be a number >= 0' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'The default, 0.2, is the usual "significant shift" level of the population stability index.';
  END IF;
  IF p_threshold IS NULL OR p_threshold = 'NaN' OR p_threshold < 0 OR p_threshold > 1 THEN
    RAISE EXCEPTION 'p_threshold must be in [0, 1]' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'The default is 0.05.';
  END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Data: a data set reference ('name', 'name@N') or a query, as a relation the caller reads.
-- A query runs as the caller with the caller's search_path into a temp table (dropped by the
-- caller through flock._drop_monitor_data); a data set is read from its snapshot table.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._monitor_data(data text, path text, what text) RETURNS regclass
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  rel regclass;
  n bigint;
BEGIN
  IF data IS NULL THEN
    RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed',
      HINT = 'Pass a data set reference (''name@N'') or a query (''SELECT ...'', ''TABLE t'').';
  END IF;
  IF data ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}(@[0-9]{1,9})?$' THEN
    rel := (flock._resolve_dataset(data)).table_name::regclass;
  ELSE
    rel := (flock._run_into_temp(data, path)).tmp;
  END IF;
  EXECUTE format('SELECT count(*) FROM %s', rel) INTO n;
  IF n = 0 THEN
    PERFORM flock._drop_monitor_data(rel);
    RAISE EXCEPTION 'the % has no rows', what USING ERRCODE = 'invalid_parameter_value',
      DETAIL = format('%s is %s.', initcap(what), data),
      HINT = 'Drift and fairness need at least one row; check the data set or the query''s filter.';
  END IF;
  RETURN rel;
END $$;

CREATE FUNCTION flock._drop_monitor_data(rel regclass) RETURNS void
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel AND c.relnamespace = pg_my_temp_schema()) THEN
    EXECUTE format('DROP TABLE %s', rel);
  END IF;
END $$;

-- The column of `rel` that feeds `feature`: the same name, else the one name equal ignoring case
-- (as the prediction functions bind a record); 42703 when there is none.
CREATE FUNCTION flock._monitor_column(rel regclass, feature text, what text, purpose text) RETURNS name
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  found name;
  n integer;
BEGIN
  SELECT a.attname INTO found FROM pg_attribute a
   WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = feature;
  IF found IS NOT NULL THEN
    RETURN found;
  END IF;
  SELECT min(a.attname), count(*) INTO found, n FROM pg_attribute a
   WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND lower(a.attname) = lower(feature);
  IF n = 1 THEN
    RETURN found;
  END IF;
  RAISE EXCEPTION 'column "%" does not exist in the %', feature, what USING ERRCODE = 'undefined_column',
    DETAIL = format('It is %s.', purpose),
    HINT = format('Its columns: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                                        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
END $$;

-- 'numeric' or 'categorical' for a column's type; 42804 for types that are neither.
CREATE FUNCTION flock._column_kind(rel regclass, col name) RETURNS text
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  typ regtype;
BEGIN
  SELECT a.atttypid INTO typ FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = col;
  IF typ IN ('smallint'::regtype, 'integer', 'bigint', 'real', 'double precision', 'numeric') THEN
    RETURN 'numeric';
  ELSIF typ IN ('text'::regtype, 'character varying', 'character', 'boolean', 'name') THEN
    RETURN 'categorical';
  END IF;
  RAISE EXCEPTION 'column "%" has type %, which drift does not measure', col, typ USING ERRCODE = 'datatype_mismatch',
    HINT = 'Numbers (integer, real, double precision, numeric) get PSI and the KS test, text and boolean chi-squared; cast other types in a query.';
END $$;

-- A column as its sample's elements: numbers as float8, booleans as '0' / '1' (what a model's
-- numeric input sees, and so how the inference log holds them), other categories as text.
CREATE FUNCTION flock._sample_expr(rel regclass, col name) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN flock._column_kind(rel, col) = 'numeric' THEN format('%I::float8', col)
              WHEN a.atttypid = 'boolean'::regtype THEN format('(%I::integer)::text', col)
              ELSE format('%I::text', col) END
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = col
$$;

-- The model's features as columns of `rel`: its feature names; else the names of its inputs when
-- it has one per column; else the first `width` columns of `rel` (a model without names binds a
-- record by position).
CREATE FUNCTION flock._monitor_features(sig jsonb, rel regclass, what text)
RETURNS TABLE(ord integer, feature text, col name, kind text)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  names text[];
BEGIN
  SELECT array_agg(f ORDER BY i) INTO names FROM jsonb_array_elements_text(coalesce(sig->'features', '[]')) WITH ORDINALITY AS x(f, i);
  IF names IS NULL AND jsonb_array_length(coalesce(sig->'inputs', '[]')) > 1 THEN
    SELECT array_agg(x->>'name' ORDER BY i) INTO names FROM jsonb_array_elements(sig->'inputs') WITH ORDINALITY AS y(x, i);
  END IF;
  IF names IS NULL THEN
    SELECT array_agg(a.attname::text ORDER BY a.attnum) INTO names
      FROM (SELECT a0.attname, a0.attnum FROM pg_attribute a0 WHERE a0.attrelid = rel AND a0.attnum > 0 AND NOT a0.attisdropped
             ORDER BY a0.attnum LIMIT (sig->'inputs'->0->>'width')::integer) a;
  END IF;
  RETURN QUERY
    SELECT n.i::integer, n.f, c.col, flock._column_kind(rel, c.col)
      FROM unnest(names) WITH ORDINALITY AS n(f, i)
      CROSS JOIN LATERAL (SELECT flock._monitor_column(rel, n.f, what, 'an input feature of the model') AS col) c
     ORDER BY n.i;
END $$;

-- The model's input for a row t of `rel`: the whole row (bound by column name), or for a model
-- without feature names ROW(its first `width` columns), as flock._monitor_features reads them.
CREATE FUNCTION flock._monitor_input(sig jsonb, rel regclass) RETURNS text
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN jsonb_array_length(coalesce(sig->'features', '[]')) > 0
                   OR jsonb_array_length(coalesce(sig->'inputs', '[]')) > 1 THEN 't'
              ELSE (SELECT format('ROW(%s)', string_agg(format('t.%I', a.attname), ', ' ORDER BY a.attnum))
                      FROM (SELECT a0.attname, a0.attnum FROM pg_attribute a0
                             WHERE a0.attrelid = rel AND a0.attnum > 0 AND NOT a0.attisdropped
                             ORDER BY a0.attnum LIMIT (sig->'inputs'->0->>'width')::integer) a) END
$$;

-- The model's prediction on every row of `rel`: regression models give numbers (flock.predict),
-- classifiers labels (flock.predict_label). 42804 when the model has no single numeric output.
CREATE FUNCTION flock._monitor_predictions(ref text, sig jsonb, rel regclass, what text,
                                           OUT kind text, OUT num float8[], OUT labels text[])
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  input text := flock._monitor_input(sig, rel);
BEGIN
  IF sig->>'task' = 'classification' THEN
    kind := 'categorical';
    EXECUTE format('SELECT array_agg(flock.predict_label(%L, %s)) FROM %s t', ref, input, rel) INTO labels;
    IF coalesce(cardinality(array_remove(labels, NULL)), 0) = 0 THEN
      RAISE EXCEPTION 'model % predicts no label on the %', ref, what USING ERRCODE = 'invalid_parameter_value',
        DETAIL = 'Every prediction is NULL (a NULL row gives NULL).', HINT = 'Check the rows of the data.';
    END IF;
    RETURN;
  END IF;
  kind := 'numeric';
  BEGIN
    EXECUTE format('SELECT array_agg(flock.predict(%L, %s)) FROM %s t', ref, input, rel) INTO num;
  EXCEPTION WHEN datatype_mismatch THEN
    IF SQLERRM ~* 'per row|output|label' THEN
      RAISE EXCEPTION 'model % has no numeric output to measure', ref USING ERRCODE = 'datatype_mismatch',
        DETAIL = SQLERRM, HINT = 'Drift and fairness use flock.predict''s single number (regression) or flock.predict_label (classification).';
    END IF;
    RAISE;
  END;
  IF flock._usable_count(num) = 0 THEN
    RAISE EXCEPTION 'model % predicts no number on the %', ref, what USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'Every prediction is NULL, NaN or infinite.', HINT = 'Check the rows of the data (NaN inputs give NaN).';
  END IF;
END $$;

-- ---------------------------------------------------------------------------------------------
-- flock.drift(model, baseline, current): per input feature and for the prediction.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._drift(model text, baseline text, current text, path text, psi_threshold float8, p_threshold float8)
RETURNS TABLE(feature text, role text, kind text, n_baseline bigint, n_current bigint, psi float8,
              ks_statistic float8, ks_pvalue float8, chi2 float8, chi2_dof bigint, chi2_pvalue float8, drifted boolean)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m flock.models;
  ref text;
  base_rel regclass;
  cur_rel regclass;
  f record;
  cur_col name;
  bn float8[]; cn float8[]; bt text[]; ct text[];
  bp record; cp record;
  s record;
BEGIN
  PERFORM flock._check_thresholds(psi_threshold, p_threshold);
  m := flock._resolve(model);
  ref := m.name || '@' || m.version;
  PERFORM flock._note_analysis(m.name);
  base_rel := flock._monitor_data(baseline, path, 'baseline');
  cur_rel := flock._monitor_data(current, path, 'current data');
  FOR f IN SELECT * FROM flock._monitor_features(m.signature, base_rel, 'baseline') LOOP
    cur_col := flock._monitor_column(cur_rel, f.feature, 'current data', 'an input feature of the model');
    IF f.kind = 'numeric' THEN
      IF flock._column_kind(cur_rel, cur_col) <> 'numeric' THEN
        RAISE EXCEPTION 'feature "%" is a number in the baseline but not in the current data', f.feature
          USING ERRCODE = 'datatype_mismatch', HINT = 'Cast the column in the query so both have the same kind.';
      END IF;
      EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(base_rel, f.col), base_rel) INTO bn;
      EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(cur_rel, cur_col), cur_rel) INTO cn;
      IF flock._usable_count(bn) = 0 OR flock._usable_count(cn) = 0 THEN
        RAISE EXCEPTION 'feature "%" has no values in the %', f.feature,
          CASE WHEN flock._usable_count(bn) = 0 THEN 'baseline' ELSE 'current data' END
          USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Every value is NULL, NaN or infinite.',
                HINT = 'Drift compares values; give that column values or leave the rows out.';
      END IF;
    ELSE
      IF flock._column_kind(cur_rel, cur_col) <> 'categorical' THEN
        RAISE EXCEPTION 'feature "%" is categorical in the baseline but a number in the current data', f.feature
          USING ERRCODE = 'datatype_mismatch', HINT = 'Cast the column in the query so both have the same kind.';
      END IF;
      EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(base_rel, f.col), base_rel) INTO bt;
      EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(cur_rel, cur_col), cur_rel) INTO ct;
      IF cardinality(array_remove(bt, NULL)) = 0 OR cardinality(array_remove(ct, NULL)) = 0 THEN
        RAISE EXCEPTION 'feature "%" has no values in the %', f.feature,
          CASE WHEN cardinality(array_remove(bt, NULL)) = 0 THEN 'baseline' ELSE 'current data' END
          USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Every value is NULL.',
                HINT = 'Drift compares values; give that column values or leave the rows out.';
      END IF;
    END IF;
    s := flock._drift_stats(f.kind, bn, cn, bt, ct, psi_threshold, p_threshold);
    feature := f.feature; role := 'input'; kind := f.kind;
    n_baseline := s.n_baseline; n_current := s.n_current; psi := s.psi; ks_statistic := s.ks_statistic;
    ks_pvalue := s.ks_pvalue; chi2 := s.chi2; chi2_dof := s.chi2_dof; chi2_pvalue := s.chi2_pvalue; drifted := s.drifted;
    RETURN NEXT;
  END LOOP;
  bp := flock._monitor_predictions(ref, m.signature, base_rel, 'baseline');
  cp := flock._monitor_predictions(ref, m.signature, cur_rel, 'current data');
  s := flock._drift_stats(bp.kind, bp.num, cp.num, bp.labels, cp.labels, psi_threshold, p_threshold);
  feature := 'prediction'; role := 'prediction'; kind := bp.kind;
  n_baseline := s.n_baseline; n_current := s.n_current; psi := s.psi; ks_statistic := s.ks_statistic;
  ks_pvalue := s.ks_pvalue; chi2 := s.chi2; chi2_dof := s.chi2_dof; chi2_pvalue := s.chi2_pvalue; drifted := s.drifted;
  RETURN NEXT;
  PERFORM flock._drop_monitor_data(base_rel);
  PERFORM flock._drop_monitor_data(cur_rel);
END $$;

CREATE FUNCTION flock.drift(model text, baseline text, current text,
                            psi_threshold float8 DEFAULT 0.2, p_threshold float8 DEFAULT 0.05)
RETURNS TABLE(feature text, role text, kind text, n_baseline bigint, n_current bigint, psi float8,
              ks_statistic float8, ks_pvalue float8, chi2 float8, chi2_dof bigint, chi2_pvalue float8, drifted boolean)
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
  SELECT * FROM flock._drift(model, baseline, current, pg_catalog.current_setting('search_path'), psi_threshold, p_threshold)
$$;
COMMENT ON FUNCTION flock.drift(text, text, text, float8, float8) IS
  'drift of each input feature and of the prediction between baseline and current data (data set references or queries): PSI, KS, chi-squared';

-- ---------------------------------------------------------------------------------------------
-- flock.monitor: drift over windows of flock.inference_log, stored in flock.monitor_results.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.monitor_results (
  run_id        uuid        NOT NULL,        -- one call of flock.monitor
  model_name    text        NOT NULL,
  model_version integer     NOT NULL,
  baseline      text        NOT NULL,        -- the data set reference or query, as given
  window_start  timestamptz NOT NULL,
  window_end    timestamptz NOT NULL,
  feature       text        NOT NULL,
  role          text        NOT NULL CHECK (role IN ('input', 'prediction')),
  kind          text        NOT NULL CHECK (kind IN ('numeric', 'categorical')),
  n_baseline    bigint      NOT NULL,
  n_current     bigint      NOT NULL,
  psi           float8      NOT NULL,
  ks_statistic  float8,
  ks_pvalue     float8,
  chi2          float8,
  chi2_dof      bigint,
  chi2_pvalue   float8,
  drifted       boolean     NOT NULL,
  computed_by   name        NOT NULL DEFAULT current_user,
  computed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flock.monitor_results IS
  'drift of a model''s inputs and predictions per window of the inference log, written by flock.monitor';
CREATE INDEX monitor_results_model ON flock.monitor_results (model_name, model_version, window_start);
SELECT pg_catalog.pg_extension_config_dump('flock.monitor_results', '');
ALTER TABLE flock.monitor_results ENABLE ROW LEVEL SECURITY;
-- Rows are visible to the role that computed them and to the roles that manage the model;
-- written (and deleted) by the role that computes them.
CREATE POLICY monitor_results_visible ON flock.monitor_results FOR SELECT
  USING (computed_by = current_user
         OR model_name IN (SELECT p.name FROM flock.model_privileges p WHERE p.privilege = 'manage'));
CREATE POLICY monitor_results_insert ON flock.monitor_results FOR INSERT WITH CHECK (computed_by = current_user);
CREATE POLICY monitor_results_delete ON flock.monitor_results FOR DELETE USING (computed_by = current_user);
REVOKE ALL ON flock.monitor_results FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON flock.monitor_results TO PUBLIC;

-- The statements in which flock.drift, flock.monitor or flock.fairness made predictions of an
-- audited model: the audit records them like any other, and flock.monitor leaves them out of its
-- windows (they are analysis, not traffic). Matched to the log by (model, role, statement start).
CREATE TABLE flock.monitor_statements (
  model_name           text        NOT NULL,
  role                 name        NOT NULL DEFAULT current_user,
  statement_started_at timestamptz NOT NULL DEFAULT statement_timestamp(),
  PRIMARY KEY (model_name, role, statement_started_at)
);
COMMENT ON TABLE flock.monitor_statements IS
  'statements whose predictions were made by flock.drift / monitor / fairness, left out of flock.monitor''s windows';
SELECT pg_catalog.pg_extension_config_dump('flock.monitor_statements', '');
ALTER TABLE flock.monitor_statements ENABLE ROW LEVEL SECURITY;
CREATE POLICY monitor_statements_visible ON flock.monitor_statements FOR SELECT
  USING (role = current_user
         OR model_name IN (SELECT p.name FROM flock.model_privileges p WHERE p.privilege = 'manage'));
CREATE POLICY monitor_statements_insert ON flock.monitor_statements FOR INSERT WITH CHECK (role = current_user);
REVOKE ALL ON flock.monitor_statements FROM PUBLIC;
GRANT SELECT, INSERT ON flock.monitor_statements TO PUBLIC;

-- Notes this statement as analysis of `model_name` when the model's predictions are recorded.
CREATE FUNCTION flock._note_analysis(model_name text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM flock.audit_policies p WHERE p.name = _note_analysis.model_name AND p.mode <> 'off')
     AND NOT EXISTS (SELECT 1 FROM flock.monitor_statements s
                      WHERE s.model_name = _note_analysis.model_name AND s.role = current_user
                        AND s.statement_started_at = statement_timestamp()) THEN
    INSERT INTO flock.monitor_statements (model_name) VALUES (_note_analysis.model_name);
  END IF;
END $$;

-- Is log row (model, role, logged_at) one of those statements'?
CREATE FUNCTION flock._is_analysis(model_name text, role name, logged_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT EXISTS (SELECT 1 FROM flock.monitor_statements s
                  WHERE s.model_name = _is_analysis.model_name AND s.role = _is_analysis.role
                    AND s.statement_started_at = _is_analysis.logged_at)
$$;

-- A model's logged feature values in [from, to), for the logged version: as numbers, and as
-- text (a text input's value, else the number's text: a boolean column's 0 / 1).
CREATE FUNCTION flock._logged_inputs(model_name text, model_version integer, feature text, feature_no integer,
                                     from_time timestamptz, to_time timestamptz, OUT num float8[], OUT labels text[])
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT array_agg(coalesce(l.input[r][k.k], l.input_real[r][k.k]::float8)),
         array_agg(coalesce(l.input_text[r][k.k], l.input[r][k.k]::text, l.input_real[r][k.k]::text))
    FROM flock.inference_log l
    CROSS JOIN LATERAL generate_series(1, l.n_rows) AS r
    CROSS JOIN LATERAL (SELECT coalesce(array_position(l.features, feature), feature_no) AS k) k
   WHERE l.model_name = _logged_inputs.model_name AND l.model_version = _logged_inputs.model_version
     AND l.logged_at >= from_time AND l.logged_at < to_time
     AND NOT flock._is_analysis(l.model_name, l.role, l.logged_at)
$$;

-- A model's logged predictions in [from, to): numbers of flock.predict (regression) or the labels
-- of flock.predict_label and flock.predict (classification, the number as text).
CREATE FUNCTION flock._logged_predictions(model_name text, model_version integer, task text,
                                          from_time timestamptz, to_time timestamptz, OUT num float8[], OUT labels text[])
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT array_agg(l.output[r][1]) FILTER (WHERE task <> 'classification' AND l.function = 'predict'),
         array_agg(coalesce(l.output_label[r], l.output[r][1]::text))
           FILTER (WHERE task = 'classification' AND l.function IN ('predict', 'predict_label'))
    FROM flock.inference_log l
    CROSS JOIN LATERAL generate_series(1, l.n_rows) AS r
   WHERE l.model_name = _logged_predictions.model_name AND l.model_version = _logged_predictions.model_version
     AND l.logged_at >= from_time AND l.logged_at < to_time
     AND NOT flock._is_analysis(l.model_name, l.role, l.logged_at)
$$;

CREATE FUNCTION flock._monitor(model text, baseline text, win interval, since timestamptz, path text,
                               psi_threshold float8, p_threshold float8)
RETURNS SETOF flock.monitor_results
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m flock.models;
  ref text;
  base_rel regclass;
  run uuid := gen_random_uuid();
  f record;
  bn float8[]; bt text[];
  cur record;
  bp record;
  s record;
  ws timestamptz;
  stop_at timestamptz := now();
  logged bigint;
  row_out flock.monitor_results;
BEGIN
  PERFORM flock._check_thresholds(psi_threshold, p_threshold);
  IF win IS NULL OR win <= interval '0' THEN
    RAISE EXCEPTION 'window must be a positive interval' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'E.g. flock.monitor(''churn'', ''customers@1'', ''1 day'', now() - interval ''7 days'').';
  END IF;
  IF since IS NULL OR since = '-infinity' OR since = 'infinity' THEN
    RAISE EXCEPTION 'since must be a finite timestamp' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'The first window starts at since; e.g. now() - interval ''7 days''.';
  END IF;
  IF since >= stop_at THEN
    RAISE EXCEPTION 'since (%) is not in the past', since USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Windows run from since to now().';
  END IF;
  m := flock._resolve(model);
  ref := m.name || '@' || m.version;
  SELECT count(*) INTO logged FROM flock.inference_log l
   WHERE l.model_name = m.name AND l.model_version = m.version AND l.logged_at >= since AND l.logged_at < stop_at
     AND NOT flock._is_analysis(l.model_name, l.role, l.logged_at);
  IF logged = 0 THEN
    RAISE EXCEPTION 'no predictions of % are logged since %', ref, since USING ERRCODE = 'invalid_parameter_value',
      DETAIL = 'The windows to measure are empty (only the log rows you may read count: your own, or every one of a model you manage).',
      HINT = format('Record predictions with flock.set_audit(%L, ''all''), or pick an earlier since.', m.name);
  END IF;
  PERFORM flock._note_analysis(m.name);
  base_rel := flock._monitor_data(baseline, path, 'baseline');
  bp := flock._monitor_predictions(ref, m.signature, base_rel, 'baseline');
  ws := since;
  WHILE ws < stop_at LOOP
    IF EXISTS (SELECT 1 FROM flock.inference_log l WHERE l.model_name = m.name AND l.model_version = m.version
                  AND l.logged_at >= ws AND l.logged_at < ws + win
                  AND NOT flock._is_analysis(l.model_name, l.role, l.logged_at)) THEN
      FOR f IN SELECT * FROM flock._monitor_features(m.signature, base_rel, 'baseline') LOOP
        IF f.kind = 'numeric' THEN
          EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(base_rel, f.col), base_rel) INTO bn;
        ELSE
          EXECUTE format('SELECT array_agg(%s) FROM %s', flock._sample_expr(base_rel, f.col), base_rel) INTO bt;
        END IF;
        cur := flock._logged_inputs(m.name, m.version, f.feature, f.ord, ws, ws + win);
        -- A feature with no values on either side in this window gets no row.
        CONTINUE WHEN (f.kind = 'numeric' AND (flock._usable_count(bn) = 0 OR coalesce(flock._usable_count(cur.num), 0) = 0))
                   OR (f.kind = 'categorical' AND (coalesce(cardinality(array_remove(bt, NULL)), 0) = 0
                                                   OR coalesce(cardinality(array_remove(cur.labels, NULL)), 0) = 0));
        s := flock._drift_stats(f.kind, bn, cur.num, bt, cur.labels, psi_threshold, p_threshold);
        INSERT INTO flock.monitor_results (run_id, model_name, model_version, baseline, window_start, window_end, feature,
                                           role, kind, n_baseline, n_current, psi, ks_statistic, ks_pvalue, chi2, chi2_dof,
                                           chi2_pvalue, drifted)
        VALUES (run, m.name, m.version, baseline, ws, ws + win, f.feature, 'input', f.kind, s.n_baseline, s.n_current,
                s.psi, s.ks_statistic, s.ks_pvalue, s.chi2, s.chi2_dof, s.chi2_pvalue, s.drifted)
        RETURNING * INTO row_out;
        RETURN NEXT row_out;
      END LOOP;
      cur := flock._logged_predictions(m.name, m.version, m.signature->>'task', ws, ws + win);
      IF (bp.kind = 'numeric' AND coalesce(flock._usable_count(cur.num), 0) > 0)
         OR (bp.kind = 'categorical' AND coalesce(cardinality(array_remove(cur.labels, NULL)), 0) > 0) THEN
        s := flock._drift_stats(bp.kind, bp.num, cur.num, bp.labels, cur.labels, psi_threshold, p_threshold);
        INSERT INTO flock.monitor_results (run_id, model_name, model_version, baseline, window_start, window_end, feature,
                                           role, kind, n_baseline, n_current, psi, ks_statistic, ks_pvalue, chi2, chi2_dof,
                                           chi2_pvalue, drifted)
        VALUES (run, m.name, m.version, baseline, ws, ws + win, 'prediction', 'prediction', bp.kind, s.n_baseline,
                s.n_current, s.psi, s.ks_statistic, s.ks_pvalue, s.chi2, s.chi2_dof, s.chi2_pvalue, s.drifted)
        RETURNING * INTO row_out;
        RETURN NEXT row_out;
      END IF;
    END IF;
    ws := ws + win;
  END LOOP;
  PERFORM flock._drop_monitor_data(base_rel);
END $$;

CREATE FUNCTION flock.monitor(model text, baseline text, "window" interval, since timestamptz,
                              psi_threshold float8 DEFAULT 0.2, p_threshold float8 DEFAULT 0.05)
RETURNS SETOF flock.monitor_results
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
  SELECT * FROM flock._monitor(model, baseline, "window", since, pg_catalog.current_setting('search_path'),
                               psi_threshold, p_threshold)
$$;
COMMENT ON FUNCTION flock.monitor(text, text, interval, timestamptz, float8, float8) IS
  'drift of the logged inputs and predictions of a model per window since `since`, against a baseline; stored in flock.monitor_results';

-- The pg_cron job's name and command for a model's monitor.
CREATE FUNCTION flock._monitor_job(model text, baseline text, win interval, OUT job_name text, OUT command text)
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT 'flock_monitor:' || model,
         format('SELECT count(*) FROM flock.monitor(%L, %L, %L::interval, now() - %L::interval)', model, baseline, win, win)
$$;

-- pg_cron's database (cron.database_name), NULL when the caller may not read it or pg_cron is not loaded.
CREATE FUNCTION flock._cron_database() RETURNS text
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RETURN current_setting('cron.database_name', true);
EXCEPTION WHEN insufficient_privilege THEN
  RETURN NULL;
END $$;

-- Schedules flock.monitor(model, baseline, window, now() - window) with pg_cron, as the calling
-- role, in this database. pg_cron lives in one database (cron.database_name); from another one
-- the job is made there with cron.schedule_in_database, which this function cannot reach: it then
-- says what to run there.
CREATE FUNCTION flock.schedule_monitor(model text, baseline text, "window" interval, schedule text) RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m flock.models;
  job record;
  job_id bigint;
  cron_db text;
BEGIN
  IF schedule IS NULL OR "window" IS NULL OR "window" <= interval '0' OR baseline IS NULL THEN
    RAISE EXCEPTION 'baseline, window and schedule must be given, window positive' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'E.g. flock.schedule_monitor(''churn'', ''customers@1'', ''1 hour'', ''0 * * * *'').';
  END IF;
  m := flock._resolve(model);  -- the model must exist and be usable by the caller
  job := flock._monitor_job(model, baseline, "window");
  IF to_regnamespace('cron') IS NULL THEN
    cron_db := flock._cron_database();
    RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = format('pg_cron runs its jobs from database %s (cron.database_name).', coalesce(cron_db, 'named by the setting')),
            HINT = format('In database %s run: SELECT cron.schedule_in_database(%L, %L, %L, %L);',
                          coalesce(cron_db, 'postgres'), job.job_name, schedule, job.command, current_database());
  END IF;
  EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job_id USING job.job_name, schedule, job.command;
  RETURN job_id;
END $$;
COMMENT ON FUNCTION flock.schedule_monitor(text, text, interval, text) IS
  'runs flock.monitor over the last window on a pg_cron schedule, as the calling role; returns the job id';

CREATE FUNCTION flock.unschedule_monitor(model text) RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF to_regnamespace('cron') IS NULL THEN
    RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('In database %s run: SELECT cron.unschedule(%L);',
                          coalesce(flock._cron_database(), 'postgres'), 'flock_monitor:' || model);
  END IF;
  RETURN (SELECT cron.unschedule('flock_monitor:' || model));
END $$;
COMMENT ON FUNCTION flock.unschedule_monitor(text) IS 'removes the pg_cron job flock.schedule_monitor made for a model';

-- ---------------------------------------------------------------------------------------------
-- flock.fairness(model, data, sensitive, label, positive): metrics per group of the sensitive
-- column(s) and their differences (Fairlearn's definitions, README "Monitoring and fairness").
-- ---------------------------------------------------------------------------------------------
-- A label as the text classes are compared in: booleans and integral numbers as '0' / '1' / 'N'.
CREATE FUNCTION flock._class_text(v text) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT CASE WHEN v IN ('true', 't') THEN '1' WHEN v IN ('false', 'f') THEN '0'
              WHEN v ~ '^-?[0-9]+(\.0*)?$' THEN regexp_replace(regexp_replace(v, '\.0*$', ''), '^-0$', '0')
              ELSE v END
$$;

CREATE FUNCTION flock._fairness(model text, data text, sensitive text, label text, positive text, path text)
RETURNS TABLE(scope text, "group" jsonb, metric text, value float8)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m flock.models;
  ref text;
  rel regclass;
  sens_cols name[] := '{}';
  s text;
  label_col name;
  label_kind text;
  group_expr text;
  nulls bigint;
  classes text[];
  pos text;
  keys jsonb[];
  groups integer[];
  y_true_b boolean[]; y_pred_b boolean[];
  y_true_f float8[]; y_pred_f float8[];
  task text;
BEGIN
  IF sensitive IS NULL OR btrim(sensitive) = '' OR label IS NULL THEN
    RAISE EXCEPTION 'sensitive and label must name columns' USING ERRCODE = 'null_value_not_allowed',
      HINT = 'E.g. flock.fairness(''credit'', ''applicants@1'', ''sex, age_band'', ''repaid'').';
  END IF;
  m := flock._resolve(model);
  ref := m.name || '@' || m.version;
  task := m.signature->>'task';
  PERFORM flock._note_analysis(m.name);
  IF task <> 'classification' AND positive IS NOT NULL THEN
    RAISE EXCEPTION 'positive is for classifiers; % is a regression model', ref USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Leave positive out: regression models get per-group error statistics.';
  END IF;
  rel := flock._monitor_data(data, path, 'data');
  FOREACH s IN ARRAY string_to_array(sensitive, ',') LOOP
    sens_cols := sens_cols || flock._monitor_column(rel, btrim(s), 'data', 'a sensitive column');
  END LOOP;
  label_col := flock._monitor_column(rel, label, 'data', 'the label column');
  FOREACH s IN ARRAY sens_cols LOOP
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL', rel, s) INTO nulls;
    IF nulls > 0 THEN
      RAISE EXCEPTION 'sensitive column "%" is NULL in % rows', s, nulls USING ERRCODE = 'null_value_not_allowed',
        HINT = format('Give those rows a group of their own in a query (coalesce(%I::text, ''unknown'')) or leave them out.', s);
    END IF;
  END LOOP;
  EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL', rel, label_col) INTO nulls;
  IF nulls > 0 THEN
    RAISE EXCEPTION 'label column "%" is NULL in % rows', label_col, nulls USING ERRCODE = 'null_value_not_allowed',
      HINT = 'Leave rows without a label out of the data.';
  END IF;
  group_expr := format('jsonb_build_object(%s)',
                       (SELECT string_agg(format('%L, %I::text', c, c), ', ') FROM unnest(sens_cols) c));

  IF task = 'classification' THEN
    EXECUTE format('SELECT array_agg(DISTINCT flock._class_text(%I::text)) FROM %s', label_col, rel) INTO classes;
    IF positive IS NOT NULL THEN
      pos := flock._class_text(positive);
    ELSIF cardinality(classes) > 2 THEN
      RAISE EXCEPTION 'label column "%" has % classes; selection rate, TPR and FPR need a binary label', label_col, cardinality(classes)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Pass positive => ''<class>'' to measure that class against the others.';
    ELSIF classes <@ ARRAY['0', '1'] THEN
      pos := '1';
    ELSE
      RAISE EXCEPTION 'which class of label column "%" is positive?', label_col USING ERRCODE = 'invalid_parameter_value',
        DETAIL = format('Its values: %s.', array_to_string(classes, ', ')),
        HINT = 'Pass positive => ''<class>''; labels 0 / 1 and false / true need none (1 and true are positive).';
    END IF;
    -- The positive class must be one the model predicts, or every prediction would count as negative.
    IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements_text(m.signature->'classes') c WHERE flock._class_text(c) = pos) THEN
      RAISE EXCEPTION 'positive class "%" is not a class of model %', coalesce(positive, pos), ref
        USING ERRCODE = 'invalid_parameter_value',
              HINT = format('Its classes: %s; pass positive => one of them.',
                            (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(m.signature->'classes') c));
    END IF;
    EXECUTE format('SELECT array_agg(g ORDER BY k) FROM (SELECT DISTINCT %s AS g, (%s)::text AS k FROM %s t) x',
                   group_expr, group_expr, rel) INTO keys;
    EXECUTE format('SELECT array_agg(array_position($1, %s) - 1), array_agg(flock._class_text(%I::text) = $2), '
                   'array_agg(flock._class_text(flock.predict_label(%L, %s)) = $2) FROM %s t',
                   group_expr, label_col, ref, flock._monitor_input(m.signature, rel), rel)
      INTO groups, y_true_b, y_pred_b USING keys, pos;
    RETURN QUERY
      SELECT CASE WHEN r.group_no IS NULL THEN 'summary' WHEN r.group_no < 0 THEN 'overall' ELSE 'group' END,
             CASE WHEN r.group_no >= 0 THEN keys[r.group_no + 1] END, r.metric, r.value
        FROM flock._fairness_classification(groups, y_true_b, y_pred_b) r;
  ELSE
    label_kind := flock._column_kind(rel, label_col);
    IF label_kind <> 'numeric' THEN
      RAISE EXCEPTION 'label column "%" is not numeric; % is a regression model', label_col, ref
        USING ERRCODE = 'datatype_mismatch', HINT = 'A regression model''s errors are measured against a numeric label.';
    END IF;
    EXECUTE format('SELECT array_agg(g ORDER BY k) FROM (SELECT DISTINCT %s AS g, (%s)::text AS k FROM %s t) x',
                   group_expr, group_expr, rel) INTO keys;
    DECLARE
      p record;
    BEGIN
      p := flock._monitor_predictions(ref, m.signature, rel, 'data');  -- 42804 for a model without a numeric output
      y_pred_f := p.num;
    END;
    EXECUTE format('SELECT array_agg(array_position($1, %s) - 1), array_agg(%I::float8) FROM %s t',
                   group_expr, label_col, rel)
      INTO groups, y_true_f USING keys;
    IF flock._usable_count(y_true_f) <> cardinality(y_true_f) THEN
      RAISE EXCEPTION 'label column "%" has NaN or infinite values', label_col USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Leave those rows out of the data.';
    END IF;
    IF flock._usable_count(y_pred_f) <> cardinality(y_pred_f) THEN
      RAISE EXCEPTION 'model % predicted NaN, infinite or NULL values on the data', ref USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Check the rows'' features (NULL inputs of a model that takes none give NULL).';
    END IF;
    RETURN QUERY
      SELECT CASE WHEN r.group_no IS NULL THEN 'summary' WHEN r.group_no < 0 THEN 'overall' ELSE 'group' END,
             CASE WHEN r.group_no >= 0 THEN keys[r.group_no + 1] END, r.metric, r.value
        FROM flock._fairness_regression(groups, y_true_f, y_pred_f) r;
  END IF;
  PERFORM flock._drop_monitor_data(rel);
END $$;

CREATE FUNCTION flock.fairness(model text, data text, sensitive text, label text, positive text DEFAULT NULL)
RETURNS TABLE(scope text, "group" jsonb, metric text, value float8)
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
  SELECT * FROM flock._fairness(model, data, sensitive, label, positive, pg_catalog.current_setting('search_path'))
$$;
COMMENT ON FUNCTION flock.fairness(text, text, text, text, text) IS
  'fairness of a model on data by group of the sensitive column(s): rates per group and their differences (classifiers), error statistics (regression)';
