-- Flock inference capture: per-model audit policies, the per-prediction view of the log, flushing.
--
-- A prediction of a model whose policy is 'all' (or 'sample', for the sampled share) is recorded in
-- flock.inference_log by the flock audit writer, a background worker, in transactions of its own:
-- the record survives a rollback of the transaction that made the prediction. See README,
-- "Inference capture".

CREATE TABLE flock.audit_policies (
  name        text        PRIMARY KEY,
  mode        text        NOT NULL CHECK (mode IN ('off', 'sample', 'all')),
  sample_rate float8      NOT NULL CHECK (sample_rate >= 0 AND sample_rate <= 1),
  set_by      name        NOT NULL,
  set_at      timestamptz NOT NULL DEFAULT now(),
  -- 'sync': a statement that made recorded predictions returns only once they are committed in the
  -- log (flushed to WAL), whatever the session's flock.audit_durability says.
  durability  text        NOT NULL DEFAULT 'async' CHECK (durability IN ('async', 'sync'))
);
COMMENT ON TABLE flock.audit_policies IS 'which predictions of a model (every version) are recorded in flock.inference_log';
SELECT pg_catalog.pg_extension_config_dump('flock.audit_policies', '');
-- Visible to the roles that may use the model: the prediction functions read it as the caller.
ALTER TABLE flock.audit_policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_policies_visible ON flock.audit_policies FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p));
REVOKE ALL ON flock.audit_policies FROM PUBLIC;
GRANT SELECT ON flock.audit_policies TO PUBLIC;

CREATE TABLE flock.audit_policy_history (
  id         bigserial   PRIMARY KEY,
  name       text        NOT NULL,
  from_mode  text,                     -- NULL: no policy before
  from_rate  float8,
  to_mode    text,                     -- NULL: removed with the model's last version
  to_rate    float8,
  changed_by name        NOT NULL,
  changed_at timestamptz NOT NULL DEFAULT now(),
  from_durability text,
  to_durability   text
);
COMMENT ON TABLE flock.audit_policy_history IS 'every audit policy change: who, when, from what to what';
SELECT pg_catalog.pg_extension_config_dump('flock.audit_policy_history', '');
SELECT pg_catalog.pg_extension_config_dump('flock.audit_policy_history_id_seq', '');
ALTER TABLE flock.audit_policy_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_policy_history_visible ON flock.audit_policy_history FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p WHERE p.privilege = 'manage'));
REVOKE ALL ON flock.audit_policy_history FROM PUBLIC;
GRANT SELECT ON flock.audit_policy_history TO PUBLIC;

-- The model argument of set_audit and set_audit_durability: not NULL, a name (a policy covers every
-- version). Checked before any lookup, so its errors tell nothing about the model; `example` is the
-- call the NULL error's hint shows.
CREATE FUNCTION flock._check_audit_model(model text, example text) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF model IS NULL THEN
    RAISE EXCEPTION 'model must not be NULL' USING ERRCODE = 'null_value_not_allowed',
      HINT = format('Pass the model name, e.g. %s.', example);
  END IF;
  IF strpos(model, '@') > 0 THEN
    RAISE EXCEPTION 'an audit policy is set on a model name, not on "%"', model USING ERRCODE = 'invalid_parameter_value',
      HINT = format('A policy covers every version of a model: use %L.', split_part(model, '@', 1));
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock._check_audit_model(text, text) FROM PUBLIC;

CREATE FUNCTION flock._set_audit(model text, mode text, sample_rate float8 DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  rate float8;
  prev flock.audit_policies;
BEGIN
  -- Arguments first: their errors do not depend on the model, so they tell nothing about it.
  PERFORM flock._check_audit_model(model, 'flock.set_audit(''churn'', ''all'')');
  IF _set_audit.mode IS NULL OR _set_audit.mode NOT IN ('off', 'sample', 'all') THEN
    RAISE EXCEPTION 'unknown audit mode "%"', coalesce(_set_audit.mode, 'NULL') USING ERRCODE = 'invalid_parameter_value',
      HINT = '''all'' records every prediction, ''sample'' a random share of them (sample_rate, in (0, 1]), ''off'' none.';
  END IF;
  IF _set_audit.mode = 'sample' THEN
    IF _set_audit.sample_rate IS NULL OR _set_audit.sample_rate = 'NaN'::float8
       OR _set_audit.sample_rate <= 0 OR _set_audit.sample_rate > 1 THEN
      RAISE EXCEPTION 'sample_rate must be in (0, 1] for mode ''sample'', got %', coalesce(_set_audit.sample_rate::text, 'NULL')
        USING ERRCODE = 'invalid_parameter_value',
        HINT = format('e.g. flock.set_audit(%L, ''sample'', 0.01) records about one prediction in a hundred; ''all'' records every one.', model);
    END IF;
    rate := _set_audit.sample_rate;
  ELSIF _set_audit.sample_rate IS NOT NULL THEN
    RAISE EXCEPTION 'sample_rate is for mode ''sample'' only' USING ERRCODE = 'invalid_parameter_value',
      HINT = format('Mode %L takes no sample_rate: leave it out, or use mode ''sample''.', _set_audit.mode);
  ELSE
    rate := CASE _set_audit.mode WHEN 'all' THEN 1 ELSE 0 END;
  END IF;
  PERFORM flock._require_manage(model, 'set the audit policy');
  PERFORM pg_advisory_xact_lock(hashtext('flock.audit_policies'), hashtext(model));
  SELECT * INTO prev FROM flock.audit_policies p WHERE p.name = _set_audit.model;
  IF NOT (FOUND AND prev.mode = _set_audit.mode AND prev.sample_rate = rate) THEN
    INSERT INTO flock.audit_policies AS p (name, mode, sample_rate, set_by, set_at)
    VALUES (_set_audit.model, _set_audit.mode, rate, caller, now())
    ON CONFLICT ON CONSTRAINT audit_policies_pkey
    DO UPDATE SET mode = EXCLUDED.mode, sample_rate = EXCLUDED.sample_rate, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at;
    INSERT INTO flock.audit_policy_history (name, from_mode, from_rate, to_mode, to_rate, changed_by,
                                            from_durability, to_durability)
    VALUES (_set_audit.model, prev.mode, prev.sample_rate, _set_audit.mode, rate, caller,
            prev.durability, coalesce(prev.durability, 'async'));
    -- Every session's call sites re-read the policy at their next statement.
    PERFORM flock._touch_catalog();
  END IF;
  RETURN jsonb_build_object('model', model, 'mode', _set_audit.mode, 'sample_rate', rate);
END $$;
REVOKE ALL ON FUNCTION flock._set_audit(text, text, float8) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._set_audit.
CREATE FUNCTION flock.set_audit(model text, mode text, sample_rate float8 DEFAULT NULL) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.set_audit(text, text, float8) IS
  'sets which predictions of a model are recorded in flock.inference_log: ''off'', ''sample'' (sample_rate) or ''all''';

-- When a model's records must be durable. 'sync': a statement that made recorded predictions of the
-- model returns only once the audit writer has committed them (and flushed the commit to WAL), so
-- no crash can lose the records of a statement that returned; 'async' (default): the writer stores
-- them shortly after, and records still queued when a server process crashes are lost. A session
-- can ask for 'sync' itself (SET flock.audit_durability = sync) but cannot weaken a policy's 'sync'.
CREATE FUNCTION flock._set_audit_durability(model text, durability text) RETURNS jsonb
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  prev flock.audit_policies;
  cur flock.audit_policies;
BEGIN
  -- Arguments first: their errors do not depend on the model, so they tell nothing about it.
  PERFORM flock._check_audit_model(model, 'flock.set_audit_durability(''churn'', ''sync'')');
  IF _set_audit_durability.durability IS NULL OR _set_audit_durability.durability NOT IN ('async', 'sync') THEN
    RAISE EXCEPTION 'unknown audit durability "%"', coalesce(_set_audit_durability.durability, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
      HINT = '''sync'': a statement returns only once its audit records are committed; ''async'': they are stored shortly after (a crash can lose those still queued).';
  END IF;
  PERFORM flock._require_manage(model, 'set the audit policy');
  PERFORM pg_advisory_xact_lock(hashtext('flock.audit_policies'), hashtext(model));
  SELECT * INTO prev FROM flock.audit_policies p WHERE p.name = _set_audit_durability.model;
  IF NOT FOUND THEN  -- no policy yet: recording stays 'off' until set_audit says otherwise
    INSERT INTO flock.audit_policies AS p (name, mode, sample_rate, set_by, set_at, durability)
    VALUES (_set_audit_durability.model, 'off', 0, caller, now(), _set_audit_durability.durability)
    RETURNING * INTO cur;
  ELSIF prev.durability <> _set_audit_durability.durability THEN
    UPDATE flock.audit_policies p SET durability = _set_audit_durability.durability, set_by = caller, set_at = now()
     WHERE p.name = _set_audit_durability.model RETURNING * INTO cur;
  ELSE
    cur := prev;
  END IF;
  IF prev.durability IS DISTINCT FROM cur.durability THEN
    INSERT INTO flock.audit_policy_history (name, from_mode, from_rate, to_mode, to_rate, changed_by,
                                            from_durability, to_durability)
    VALUES (_set_audit_durability.model, prev.mode, prev.sample_rate, cur.mode, cur.sample_rate, caller,
            prev.durability, cur.durability);
    -- Every session's call sites re-read the policy at their next statement.
    PERFORM flock._touch_catalog();
  END IF;
  RETURN jsonb_build_object('model', model, 'mode', cur.mode, 'sample_rate', cur.sample_rate,
                            'durability', cur.durability);
END $$;
REVOKE ALL ON FUNCTION flock._set_audit_durability(text, text) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._set_audit_durability.
CREATE FUNCTION flock.set_audit_durability(model text, durability text) RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.set_audit_durability(text, text) IS
  'sets when a model''s audit records must be durable: ''sync'' (before its statement returns) or ''async'' (default)';

-- The policy that applies to a model value (by its bytes' sha256): the strictest of the catalog
-- versions with those bytes. For the prediction functions given a flock.model instead of a name; it
-- answers only for bytes the caller already holds.
CREATE FUNCTION flock._audit_policy_for(sha text)
RETURNS TABLE (name text, version integer, mode text, sample_rate float8, durable boolean)
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- durable: any recording policy of those bytes says 'sync' (the strictest, again).
  SELECT m.name, m.version, p.mode, p.sample_rate,
         EXISTS (SELECT 1 FROM flock.models m2 JOIN flock.audit_policies p2 ON p2.name = m2.name
                  WHERE m2.sha256 = sha AND p2.mode <> 'off' AND p2.durability = 'sync')
    FROM flock.models m JOIN flock.audit_policies p ON p.name = m.name
   WHERE m.sha256 = sha AND p.mode <> 'off'
   ORDER BY p.mode = 'all' DESC, p.sample_rate DESC, m.name, m.version
   LIMIT 1
$$;

-- A model's last version dropped: its policy goes (as its grants do), the history keeps a row.
CREATE FUNCTION flock.__forget_dropped_policy() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  prev flock.audit_policies;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = OLD.name) THEN
    DELETE FROM flock.audit_policies p WHERE p.name = OLD.name RETURNING * INTO prev;
    IF FOUND THEN
      INSERT INTO flock.audit_policy_history (name, from_mode, from_rate, to_mode, to_rate, changed_by,
                                              from_durability, to_durability)
      VALUES (OLD.name, prev.mode, prev.sample_rate, NULL, NULL, flock._caller(), prev.durability, NULL);
    END IF;
  END IF;
  RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION flock.__forget_dropped_policy() FROM PUBLIC;
-- The trigger entry point: acts for current_user at the statement (or for the caller of the
-- Flock function whose statement fired it) and runs flock.__forget_dropped_policy.
CREATE FUNCTION flock._forget_dropped_policy() RETURNS trigger
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE TRIGGER models_forget_dropped_policy AFTER DELETE ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._forget_dropped_policy();

-- Waits until every audit record this database's sessions enqueued before the call is stored and
-- committed; false if `timeout` passed first. (With durability 'sync' statements wait by themselves.)
CREATE FUNCTION flock.audit_flush(timeout interval DEFAULT '30 seconds') RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_audit_flush' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION flock.audit_flush(interval) IS
  'waits until the audit records enqueued so far are stored in flock.inference_log; false on timeout';
-- This database's audit queue and writer.
CREATE FUNCTION flock.audit_status() RETURNS jsonb
  AS 'MODULE_PATHNAME', 'flock_audit_status' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL RESTRICTED;

-- One row per prediction. security_invoker: the log's row-level security applies to the reader.
-- Numbers a model took as real (float32) are stored and shown as real: 20.29, what it saw.
CREATE VIEW flock.inference_log_rows WITH (security_invoker = true) AS
  SELECT l.logged_at, l.role, l.model_name, l.model_version, l.query_id, l.function, r.row_no,
         CASE WHEN nf.n IS NULL THEN NULL
              WHEN l.features IS NOT NULL THEN
                (SELECT jsonb_object_agg(l.features[f], coalesce(to_jsonb(l.input_text[r.row_no][f]), to_jsonb(l.input_real[r.row_no][f]),
                                           to_jsonb(l.input[r.row_no][f])))
                   FROM generate_series(1, nf.n) AS f)
              ELSE
                (SELECT jsonb_agg(coalesce(to_jsonb(l.input_text[r.row_no][f]), to_jsonb(l.input_real[r.row_no][f]),
                                           to_jsonb(l.input[r.row_no][f])) ORDER BY f)
                   FROM generate_series(1, nf.n) AS f)
         END AS input,
         CASE l.function
           WHEN 'predict' THEN to_jsonb(l.output[r.row_no][1])
           WHEN 'predict_label' THEN to_jsonb(l.output_label[r.row_no])
           ELSE (SELECT jsonb_agg(u.x ORDER BY u.i) FROM unnest(l.output[r.row_no:r.row_no][:]) WITH ORDINALITY AS u(x, i))
         END AS output
    FROM flock.inference_log l
    CROSS JOIN LATERAL generate_series(1, l.n_rows) AS r(row_no)
    CROSS JOIN LATERAL (SELECT coalesce(array_length(l.input, 2), array_length(l.input_real, 2),
                                        array_length(l.input_text, 2)) AS n) nf;
COMMENT ON VIEW flock.inference_log_rows IS
  'the inference log, one row per prediction: input as a JSON object by feature name (array without names), output as JSON';
GRANT SELECT ON flock.inference_log_rows TO PUBLIC;

-- A model's audit trail, for the roles that manage it: 42501 for others (the same error for a
-- model that does not exist, unless the caller sees everything).
CREATE FUNCTION flock._audit_trail(model text, since timestamptz DEFAULT '-infinity')
RETURNS SETOF flock.inference_log_rows
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF model IS NULL THEN
    RAISE EXCEPTION 'model must not be NULL' USING ERRCODE = 'null_value_not_allowed',
      HINT = 'Pass the model name, e.g. flock.audit_trail(''churn'').';
  END IF;
  PERFORM flock._require_manage(split_part(model, '@', 1), 'read the audit trail');
  RETURN QUERY
    SELECT r.* FROM flock.inference_log_rows r
     WHERE r.model_name = split_part(_audit_trail.model, '@', 1)
       AND (strpos(_audit_trail.model, '@') = 0 OR r.model_version = (flock._resolve(_audit_trail.model)).version)
       AND r.logged_at >= coalesce(since, '-infinity')
     ORDER BY r.logged_at, r.query_id, r.model_version, r.function, r.row_no;
END $$;
REVOKE ALL ON FUNCTION flock._audit_trail(text, timestamptz) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._audit_trail.
CREATE FUNCTION flock.audit_trail(model text, since timestamptz DEFAULT '-infinity') RETURNS SETOF flock.inference_log_rows
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.audit_trail(text, timestamptz) IS
  'the recorded predictions of a model (or of one version: name@N, name@alias), one row each; needs manage';
