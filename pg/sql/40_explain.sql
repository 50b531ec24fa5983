-- ---------------------------------------------------------------------------------------------
-- Explanations (issue 14): per-feature contributions to one row's raw output (the margin, before
-- any sigmoid / softmax), computed in core (core/src/explain/). Tree ensembles: exact
-- path-dependent TreeSHAP (XGBoost's pred_contribs); linear regressors: exact linear SHAP against
-- a reference point (the background's column means, else zero). Contributions + base_value = the
-- raw output. `background`: a data set reference ('name' or 'name@N') or a query, read as
-- current_user; trees without node covers (ONNX) need one, linear models take its means.
-- `output`: the class label (or target index) to explain; default the predicted class (largest
-- raw score), or the margin of the positive class for two-class models decided by a margin.
-- Other models (and any model with flock.explain_method = 'kernel'): KernelSHAP against the
-- background; sampled, its jsonb adds "std_error" per feature and "kernel_samples" (README).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock.explain(model text, input record, interactions boolean DEFAULT false,
                              background text DEFAULT NULL, output text DEFAULT NULL) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_explain' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
CREATE FUNCTION flock.explain(model text, features float4[], interactions boolean DEFAULT false,
                              background text DEFAULT NULL, output text DEFAULT NULL) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_explain' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
CREATE FUNCTION flock.explain(model flock.model, input record, interactions boolean DEFAULT false,
                              background text DEFAULT NULL, output text DEFAULT NULL) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_explain' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
CREATE FUNCTION flock.explain(model flock.model, features float4[], interactions boolean DEFAULT false,
                              background text DEFAULT NULL, output text DEFAULT NULL) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_explain' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION flock.explain(text, record, boolean, text, text) IS
  'per-feature contributions to the raw output (SHAP): {"feature": contribution, ..., "base_value": b}';

CREATE FUNCTION flock.explain_rows(model text, input record, background text DEFAULT NULL, output text DEFAULT NULL)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock.explain_rows(model text, features float4[], background text DEFAULT NULL, output text DEFAULT NULL)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock.explain_rows(model flock.model, input record, background text DEFAULT NULL, output text DEFAULT NULL)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock.explain_rows(model flock.model, features float4[], background text DEFAULT NULL, output text DEFAULT NULL)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
COMMENT ON FUNCTION flock.explain_rows(text, record, text, text) IS
  'per-feature contributions to the raw output (SHAP) as rows (feature, value, contribution); base_value last';

-- The query that reads a background: a data set reference's snapshot table, or the text itself
-- when it is a query (it contains white space). Raises _resolve_dataset's errors.
CREATE FUNCTION flock._background_query(ref text) RETURNS text
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ds flock.datasets;
BEGIN
  IF ref ~ '\s' THEN
    RETURN ref;
  END IF;
  ds := flock._resolve_dataset(ref);
  RETURN 'SELECT * FROM ' || ds.table_name;
END $$;

-- Global importance per feature: for trees 'splits', 'cover' (XGBoost's sum_hessian, or rows of
-- `data` reaching each split) and 'gain' (XGBoost's loss_changes), for linear regressors
-- 'abs_coefficient' and, with data,
-- 'abs_coefficient_x_std'; with data (a data set reference or a query, read as current_user) for
-- any model 'mean_abs_shap' (KernelSHAP, with the session's sample count and seed, where no exact
-- method applies).
CREATE FUNCTION flock.feature_importance(model text, data text DEFAULT NULL)
  RETURNS TABLE(feature text, measure text, value float8)
  AS 'MODULE_PATHNAME', 'flock_feature_importance' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
CREATE FUNCTION flock.feature_importance(model flock.model, data text DEFAULT NULL)
  RETURNS TABLE(feature text, measure text, value float8)
  AS 'MODULE_PATHNAME', 'flock_feature_importance' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION flock.feature_importance(text, text) IS
  'per-feature importance: splits / cover (trees), |coefficient| (x std) (linear), mean |SHAP| over data';

-- flock.explain_rows' rows from its flock.explain result: the Function Scan of a batched
-- explain_rows join calls it (pg/src/explain_plan.cpp), with the explanation the batch node made.
CREATE FUNCTION flock._explain_rows_of(model text, input record, background text, output text, explanation jsonb)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows_of' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock._explain_rows_of(model text, features float4[], background text, output text, explanation jsonb)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows_of' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock._explain_rows_of(model flock.model, input record, background text, output text, explanation jsonb)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows_of' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
CREATE FUNCTION flock._explain_rows_of(model flock.model, features float4[], background text, output text, explanation jsonb)
  RETURNS TABLE(feature text, value float8, contribution float8)
  AS 'MODULE_PATHNAME', 'flock_explain_rows_of' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED ROWS 16;
