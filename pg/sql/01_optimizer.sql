-- ---------------------------------------------------------------------------------------------
-- The optimizer's SQL objects (issue 13).
-- ---------------------------------------------------------------------------------------------

-- The float nearest a float8 (IEEE: overflow to infinity, underflow to zero), as a float8: what
-- the binding does to a value fed to a float model. Model inlining (flock.optimizer_inline) uses
-- it where PostgreSQL's float8 -> float4 cast would raise on overflow or underflow. Raises nothing.
CREATE FUNCTION flock._round_to_float4(float8) RETURNS float8
  AS 'MODULE_PATHNAME', 'flock_round_to_float4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

-- The planner's cost of a prediction call whose model is a constant it can resolve, from the
-- compiled model (flock.optimizer_costs): quals cheaper than a prediction run first. Target-list
-- calls keep COST 1 (see the note above flock.predict in 00_core.sql).
CREATE FUNCTION flock._prediction_support(internal) RETURNS internal
  AS 'MODULE_PATHNAME', 'flock_prediction_support' LANGUAGE C STABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION flock._prediction_support(internal) FROM PUBLIC;

DO $$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
            WHERE p.pronamespace = 'flock'::regnamespace
              AND p.proname IN ('predict', 'predict_proba', 'predict_label', 'predict_tensor')
  LOOP
    EXECUTE format('ALTER FUNCTION %s SUPPORT flock._prediction_support', f);
  END LOOP;
END $$;
