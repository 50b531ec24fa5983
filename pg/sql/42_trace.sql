-- flock.trace: one prediction with everything it went through (issue 17). The model and the row
-- are resolved and bound as flock.predict does (same privileges, same errors); the result lists the
-- model (name, version, sha256), the input values as the model saw them (NULL = missing), every
-- graph node's outputs, every tree's path and leaf, and the final outputs and prediction. At most
-- max_values intermediate values are listed; past it the trace says "truncated": true.
CREATE FUNCTION flock.trace(model text, input record, max_values integer DEFAULT 10000) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_trace' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION flock.trace(model text, features float4[], max_values integer DEFAULT 10000) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_trace' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION flock.trace(model flock.model, input record, max_values integer DEFAULT 10000) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_trace' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION flock.trace(model flock.model, features float4[], max_values integer DEFAULT 10000) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_trace' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
COMMENT ON FUNCTION flock.trace(text, record, integer) IS
  'one prediction traced: model, bound inputs, every node''s values and tree path, outputs (jsonb)';
