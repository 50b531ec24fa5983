-- Flock aliases ('churn@champion') and the resolution of model references, which reads them.

-- ---------------------------------------------------------------------------------------------
-- Aliases ('churn@champion') and their history.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.aliases (
  name    text        NOT NULL,
  alias   text        NOT NULL CHECK (alias ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$'),
  version integer     NOT NULL,
  comment text,
  set_by  name        NOT NULL,
  set_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, alias),
  FOREIGN KEY (name, version) REFERENCES flock.models (name, version)
);
COMMENT ON TABLE flock.aliases IS 'named pointers to model versions: name@alias resolves to name@version';
SELECT pg_catalog.pg_extension_config_dump('flock.aliases', '');
ALTER TABLE flock.aliases ENABLE ROW LEVEL SECURITY;
CREATE POLICY aliases_visible ON flock.aliases FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p));
REVOKE ALL ON flock.aliases FROM PUBLIC;
GRANT SELECT ON flock.aliases TO PUBLIC;

CREATE TABLE flock.alias_history (
  id           bigserial   PRIMARY KEY,
  name         text        NOT NULL,
  alias        text        NOT NULL,
  from_version integer,                     -- NULL: the alias was created
  to_version   integer,                     -- NULL: the alias was dropped
  comment      text,
  changed_by   name        NOT NULL,
  changed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE flock.alias_history IS 'every alias transition: who, when, from which version to which';
SELECT pg_catalog.pg_extension_config_dump('flock.alias_history', '');
SELECT pg_catalog.pg_extension_config_dump('flock.alias_history_id_seq', '');
ALTER TABLE flock.alias_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY alias_history_visible ON flock.alias_history FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p));
REVOKE ALL ON flock.alias_history FROM PUBLIC;
GRANT SELECT ON flock.alias_history TO PUBLIC;

CREATE FUNCTION flock._check_alias_name(alias text) RETURNS void
LANGUAGE plpgsql IMMUTABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF alias IS NULL THEN
    RAISE EXCEPTION 'alias must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF alias ~ '^[0-9]+$' THEN
    RAISE EXCEPTION 'alias "%" looks like a version number', alias USING ERRCODE = 'invalid_parameter_value',
      HINT = '''name@N'' always means version N; an alias starts with a letter or underscore, e.g. ''champion''.';
  END IF;
  IF alias !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' THEN
    RAISE EXCEPTION 'invalid alias "%"', alias USING ERRCODE = 'invalid_name',
      HINT = 'An alias starts with a letter or underscore and has up to 63 letters, digits, _ . or -.';
  END IF;
END $$;

CREATE FUNCTION flock._set_alias(name text, alias text, version integer, comment text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  previous integer;
BEGIN
  IF name IS NULL OR version IS NULL THEN
    RAISE EXCEPTION 'model name and version must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM flock._check_alias_name(alias);
  PERFORM flock._require_manage(name, 'set an alias');
  -- One alias transition of a model at a time, so history rows chain without gaps.
  PERFORM pg_advisory_xact_lock(hashtext('flock.aliases'), hashtext(name));
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = _set_alias.name AND m.version = _set_alias.version) THEN
    RAISE EXCEPTION 'model "%" has no version %', name, version USING ERRCODE = 'undefined_object',
      HINT = format('Versions of "%s": %s.', name,
                    (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM flock.models m WHERE m.name = _set_alias.name));
  END IF;
  SELECT a.version INTO previous FROM flock.aliases a WHERE a.name = _set_alias.name AND a.alias = _set_alias.alias;
  IF FOUND AND previous = version THEN
    IF comment IS NOT NULL THEN
      UPDATE flock.aliases a SET comment = _set_alias.comment WHERE a.name = _set_alias.name AND a.alias = _set_alias.alias;
    END IF;
    RETURN name || '@' || alias;  -- no transition
  END IF;
  INSERT INTO flock.aliases AS a (name, alias, version, comment, set_by, set_at)
  VALUES (name, alias, version, comment, caller, now())
  ON CONFLICT ON CONSTRAINT aliases_pkey
  DO UPDATE SET version = EXCLUDED.version, comment = EXCLUDED.comment, set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at;
  INSERT INTO flock.alias_history (name, alias, from_version, to_version, comment, changed_by)
  VALUES (name, alias, previous, version, comment, caller);
  PERFORM flock._touch_catalog();
  RETURN name || '@' || alias;
END $$;
REVOKE ALL ON FUNCTION flock._set_alias(text, text, integer, text) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._set_alias.
CREATE FUNCTION flock.set_alias(name text, alias text, version integer, comment text DEFAULT NULL) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.set_alias(text, text, integer, text) IS
  'points name@alias at a version (creating or moving the alias) and records the transition; returns ''name@alias''';

CREATE FUNCTION flock._drop_alias(name text, alias text, comment text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  previous integer;
BEGIN
  PERFORM flock._check_alias_name(alias);
  PERFORM flock._require_manage(name, 'drop an alias');
  PERFORM pg_advisory_xact_lock(hashtext('flock.aliases'), hashtext(name));
  DELETE FROM flock.aliases a WHERE a.name = _drop_alias.name AND a.alias = _drop_alias.alias RETURNING a.version INTO previous;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'model "%" has no alias "%"', name, alias USING ERRCODE = 'undefined_object',
      HINT = coalesce('Its aliases: ' || (SELECT string_agg(format('%s (version %s)', a.alias, a.version), ', ' ORDER BY a.alias)
                                          FROM flock.aliases a WHERE a.name = _drop_alias.name) || '.',
                      'It has no aliases.');
  END IF;
  INSERT INTO flock.alias_history (name, alias, from_version, to_version, comment, changed_by)
  VALUES (name, alias, previous, NULL, comment, caller);
  PERFORM flock._touch_catalog();
  RETURN previous;
END $$;
REVOKE ALL ON FUNCTION flock._drop_alias(text, text, text) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._drop_alias.
CREATE FUNCTION flock.drop_alias(name text, alias text, comment text DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.drop_alias(text, text, text) IS
  'removes name@alias and records the transition; returns the version it pointed to';

-- Resolves a model reference: 'name' (latest version), 'name@N' (version N) or 'name@alias'.
-- Runs as the calling role: row-level security decides what it sees. The row comes back without
-- the model bytes (model is NULL): copying a multi-MB model out of TOAST on every resolution cost
-- ~15 ms per query; who needs them reads flock.models by name and version.
CREATE FUNCTION flock._resolve(ref text) RETURNS flock.models
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  model_name text;
  tag text;
  target integer;
  result flock.models;
BEGIN
  IF ref IS NULL THEN
    RAISE EXCEPTION 'model reference is NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF strpos(ref, '@') = 0 THEN
    SELECT m.name, m.version, NULL, m.format, m.sha256, m.signature, m.created_by, m.created_at, m.description INTO result
      FROM flock.models m WHERE m.name = ref ORDER BY m.version DESC LIMIT 1;
    IF NOT FOUND THEN
      PERFORM flock._model_not_found(ref, current_user);
    END IF;
    RETURN result;
  END IF;

  model_name := split_part(ref, '@', 1);
  tag := substr(ref, length(model_name) + 2);
  IF tag ~ '^[0-9]{1,9}$' THEN
    target := tag::integer;
  ELSIF tag ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,62}$' THEN
    SELECT a.version INTO target FROM flock.aliases a WHERE a.name = model_name AND a.alias = tag;
    IF NOT FOUND THEN
      IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = model_name) THEN
        PERFORM flock._model_not_found(model_name, current_user);
      END IF;
      -- A tag that is neither a version nor an alias of the model makes the reference invalid
      -- (22023, as a malformed reference); 42704 stays for unknown names and versions.
      RAISE EXCEPTION 'model "%" has no alias "%"', model_name, tag USING ERRCODE = 'invalid_parameter_value',
        HINT = coalesce('Its aliases: ' || (SELECT string_agg(format('%s (version %s)', a.alias, a.version), ', ' ORDER BY a.alias)
                                            FROM flock.aliases a WHERE a.name = model_name) || '.',
                        format('It has no aliases; set one with flock.set_alias(%L, %L, version).', model_name, tag));
    END IF;
  ELSE
    RAISE EXCEPTION 'invalid model reference "%"', ref USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''name'' for the latest version, ''name@N'' for version N or ''name@alias'' for an alias.';
  END IF;

  SELECT m.name, m.version, NULL, m.format, m.sha256, m.signature, m.created_by, m.created_at, m.description INTO result
    FROM flock.models m WHERE m.name = model_name AND m.version = target;
  IF NOT FOUND THEN
    IF EXISTS (SELECT 1 FROM flock.models m WHERE m.name = model_name) THEN
      RAISE EXCEPTION 'model "%" has no version %', model_name, tag USING ERRCODE = 'undefined_object',
        HINT = format('Versions of "%s": %s.', model_name,
                      (SELECT string_agg(m.version::text, ', ' ORDER BY m.version) FROM flock.models m WHERE m.name = model_name));
    END IF;
    PERFORM flock._model_not_found(model_name, current_user);
  END IF;
  RETURN result;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Guard on the catalog: a version an alias points to cannot be dropped.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._guard_model_delete() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  pointing text;
BEGIN
  SELECT string_agg(a.name || '@' || a.alias, ', ' ORDER BY a.alias) INTO pointing
    FROM flock.aliases a WHERE a.name = OLD.name AND a.version = OLD.version;
  IF pointing IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop model version %@%: alias % points to it', OLD.name, OLD.version, pointing
      USING ERRCODE = 'dependent_objects_still_exist',
            HINT = 'Move the alias with flock.set_alias or remove it with flock.drop_alias first.';
  END IF;
  RETURN OLD;
END $$;
CREATE TRIGGER models_guard_delete BEFORE DELETE ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._guard_model_delete();
