-- Flock governance: aliases, access control, data set snapshots, training capture, lineage.
--
-- Identity. Flock acts for the effective role: current_user at the call, as PostgreSQL's own
-- privilege checks do. A function that changes governance state, flock.F, is a C entry point
-- (SECURITY INVOKER) that notes current_user and runs its implementation flock._F: SECURITY DEFINER,
-- search_path pinned, not executable by PUBLIC, acting for flock._caller() (the noted role; calls
-- the implementation makes itself keep it). See pg/src/identity.cpp. Reads of the catalog tables
-- are filtered by row-level security for current_user.
--
-- Privileges are per model name (every version): 'use' (see it, score it, read its lineage) and
-- 'manage' (also register new versions, set aliases, grant, log training). Every role that registered
-- a version of a model owns it (manage); superusers manage everything.
--
-- Hidden = missing. A role that may not use a model gets SQLSTATE 42501 for it, and gets the very
-- same error for a name that does not exist, so errors tell nothing about models it cannot see.
-- Roles that see everything (superusers, BYPASSRLS roles) get 42704 for unknown names, as before.

-- ---------------------------------------------------------------------------------------------
-- Grants and the privileges view every access check goes through.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE flock.model_grants (
  name       text        NOT NULL,
  grantee    name        NOT NULL,           -- a role, or 'public' for every role
  privilege  text        NOT NULL CHECK (privilege IN ('use', 'manage')),
  granted_by name        NOT NULL,
  granted_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, grantee, privilege)
);
COMMENT ON TABLE flock.model_grants IS 'who may use or manage which model (per name, every version)';
SELECT pg_catalog.pg_extension_config_dump('flock.model_grants', '');

-- The models the current role may use or manage, and why. Owned by the extension's (superuser)
-- owner, so the tables under it are read without row-level security: the policies below use it
-- without recursing into themselves. current_user is the querying role.
CREATE VIEW flock.model_privileges AS
  SELECT m.name, 'manage'::text AS privilege, 'owner'::text AS via
    FROM (SELECT DISTINCT m0.name, m0.created_by FROM flock.models m0) m
    JOIN pg_catalog.pg_roles r ON r.rolname = m.created_by
   WHERE pg_catalog.pg_has_role(r.oid, 'USAGE')
  UNION
  SELECT g.name, g.privilege, 'grant to ' || g.grantee
    FROM flock.model_grants g
   WHERE g.grantee = 'public'
      OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                  WHERE r.rolname = g.grantee AND pg_catalog.pg_has_role(r.oid, 'USAGE'))
  UNION
  SELECT DISTINCT m.name, 'manage'::text, 'superuser'::text
    FROM flock.models m
   WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user AND r.rolsuper);
COMMENT ON VIEW flock.model_privileges IS 'the models the current role may use or manage, and why';
GRANT SELECT ON flock.model_privileges TO PUBLIC;

-- The catalog is visible row by row to the roles that may use the model.
ALTER TABLE flock.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY models_visible ON flock.models FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p));

ALTER TABLE flock.model_grants ENABLE ROW LEVEL SECURITY;
CREATE POLICY grants_visible ON flock.model_grants FOR SELECT
  USING (name IN (SELECT p.name FROM flock.model_privileges p WHERE p.privilege = 'manage')
         OR grantee = 'public'
         OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                     WHERE r.rolname = grantee AND pg_catalog.pg_has_role(r.oid, 'USAGE')));
REVOKE ALL ON flock.model_grants FROM PUBLIC;
GRANT SELECT ON flock.model_grants TO PUBLIC;

-- May `who` use (or manage) model `model_name`? For SECURITY DEFINER functions, which read
-- the tables without row-level security. Not callable by others (it would tell about any role).
CREATE FUNCTION flock._may(who name, model_name text, privilege text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce((
    SELECT r.rolsuper
        OR EXISTS (SELECT 1 FROM flock.models m JOIN pg_roles c ON c.rolname = m.created_by
                    WHERE m.name = _may.model_name AND pg_has_role(r.oid, c.oid, 'USAGE'))
        OR EXISTS (SELECT 1 FROM flock.model_grants g
                    WHERE g.name = _may.model_name AND (_may.privilege = 'use' OR g.privilege = 'manage')
                      AND (g.grantee = 'public'
                           OR EXISTS (SELECT 1 FROM pg_roles gr
                                       WHERE gr.rolname = g.grantee AND pg_has_role(r.oid, gr.oid, 'USAGE'))))
      FROM pg_roles r WHERE r.rolname = _may.who), false)
$$;
REVOKE ALL ON FUNCTION flock._may(name, text, text) FROM PUBLIC;

-- Does `who` see every row whatever the policies say (superuser or BYPASSRLS)?
CREATE FUNCTION flock._sees_all(who name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = who), false)
$$;

-- Raises the error for a model that `who` cannot see: 42704 when `who` sees everything (so the
-- model really does not exist), else 42501, the same whether the model exists or not.
CREATE FUNCTION flock._model_not_found(model_name text, who name) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF flock._sees_all(who) THEN
    RAISE EXCEPTION 'model "%" does not exist', model_name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT name, version FROM flock.models; register one with flock.register_model.';
  END IF;
  RAISE EXCEPTION 'permission denied for model "%"', model_name USING ERRCODE = 'insufficient_privilege',
    DETAIL = 'Either the model does not exist or you have no privilege on it; the two cases give the same error.',
    HINT = 'A model is visible to the roles that registered it, superusers, and roles granted access with flock.grant_model(name, role, ''use'').';
END $$;

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

-- Tells every backend that name resolutions may have changed: a statement on flock.models fires
-- its statement-level invalidation trigger even when it touches no row.
CREATE FUNCTION flock._touch_catalog() RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE flock.models SET description = description WHERE false
$$;
REVOKE ALL ON FUNCTION flock._touch_catalog() FROM PUBLIC;

-- Checks that the caller manages model_name; raises 42501 (or 42704 for a missing model seen by
-- a role that sees everything) otherwise. `action` completes "permission denied to ...".
CREATE FUNCTION flock._require_manage(model_name text, action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = model_name)
     OR NOT (flock._may(caller, model_name, 'use') OR flock._sees_all(caller)) THEN
    PERFORM flock._model_not_found(model_name, caller);
  END IF;
  IF NOT flock._may(caller, model_name, 'manage') THEN
    RAISE EXCEPTION 'permission denied to % of model "%"', action, model_name
      USING ERRCODE = 'insufficient_privilege',
            HINT = format('This needs the ''manage'' privilege on "%s": its owners (the roles that registered it) '
                          'or a superuser can give it with flock.grant_model(%L, role, ''manage'').', model_name, model_name);
  END IF;
END $$;
REVOKE ALL ON FUNCTION flock._require_manage(text, text) FROM PUBLIC;

CREATE FUNCTION flock._check_alias_name(alias text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.set_alias(text, text, integer, text) IS
  'points name@alias at a version (creating or moving the alias) and records the transition; returns ''name@alias''';

CREATE FUNCTION flock._drop_alias(name text, alias text, comment text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.drop_alias(text, text, text) IS
  'removes name@alias and records the transition; returns the version it pointed to';

-- Resolves a model reference: 'name' (latest version), 'name@N' (version N) or 'name@alias'.
-- Runs as the calling role: row-level security decides what it sees. The row comes back without
-- the model bytes (model is NULL): copying a multi-MB model out of TOAST on every resolution cost
-- ~15 ms per query; who needs them reads flock.models by name and version.
CREATE OR REPLACE FUNCTION flock._resolve(ref text) RETURNS flock.models
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
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
-- Granting and revoking.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._check_grant_args(model text, role name, privilege text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF model IS NULL OR role IS NULL THEN
    RAISE EXCEPTION 'model and role must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF strpos(model, '@') > 0 THEN
    RAISE EXCEPTION 'privileges are granted on a model name, not on "%"', model USING ERRCODE = 'invalid_parameter_value',
      HINT = format('A grant covers every version of a model: use %L.', split_part(model, '@', 1));
  END IF;
  IF privilege IS NOT NULL AND privilege NOT IN ('use', 'manage') THEN
    RAISE EXCEPTION 'unknown model privilege "%"', privilege USING ERRCODE = 'invalid_parameter_value',
      HINT = '''use'' lets a role see and score the model; ''manage'' also lets it register versions, set aliases and grant.';
  END IF;
  IF lower(role) <> 'public' AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = role) THEN
    RAISE EXCEPTION 'role "%" does not exist', role USING ERRCODE = 'undefined_object';
  END IF;
END $$;

CREATE FUNCTION flock._grant_model(model text, role name, privilege text DEFAULT 'use') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF privilege IS NULL THEN
    RAISE EXCEPTION 'privilege must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM flock._check_grant_args(model, role, privilege);
  PERFORM flock._require_manage(model, 'grant privileges');
  INSERT INTO flock.model_grants (name, grantee, privilege, granted_by)
  VALUES (model, CASE WHEN lower(role) = 'public' THEN 'public' ELSE role END, privilege, flock._caller())
  ON CONFLICT DO NOTHING;
  PERFORM flock._touch_catalog();
END $$;
REVOKE ALL ON FUNCTION flock._grant_model(text, name, text) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._grant_model.
CREATE FUNCTION flock.grant_model(model text, role name, privilege text DEFAULT 'use') RETURNS void
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.grant_model(text, name, text) IS
  'gives a role (or PUBLIC) ''use'' or ''manage'' on every version of a model';

CREATE FUNCTION flock._revoke_model(model text, role name, privilege text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  n integer;
BEGIN
  PERFORM flock._check_grant_args(model, role, privilege);
  PERFORM flock._require_manage(model, 'revoke privileges');
  DELETE FROM flock.model_grants g
   WHERE g.name = model AND g.grantee = CASE WHEN lower(role) = 'public' THEN 'public' ELSE role END
     AND (_revoke_model.privilege IS NULL OR g.privilege = _revoke_model.privilege);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM flock._touch_catalog();
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION flock._revoke_model(text, name, text) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._revoke_model.
CREATE FUNCTION flock.revoke_model(model text, role name, privilege text DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.revoke_model(text, name, text) IS
  'takes back a role''s privilege on a model (both when privilege is NULL); returns how many grants went';

-- ---------------------------------------------------------------------------------------------
-- Guards on the catalog: new versions of an existing model need 'manage'; a version an alias
-- points to cannot be dropped; grants of a model whose last version is gone are removed.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock.__guard_model_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
BEGIN
  IF EXISTS (SELECT 1 FROM flock.models m WHERE m.name = NEW.name)
     AND NOT flock._may(caller, NEW.name, 'manage') THEN
    RAISE EXCEPTION 'permission denied to register a new version of model "%"', NEW.name
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'The name is taken. Registering a version of an existing model needs the ''manage'' privilege on it '
                   '(flock.grant_model); or choose another name.';
  END IF;
  RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION flock.__guard_model_insert() FROM PUBLIC;
-- The trigger entry point: acts for current_user at the statement (or for the caller of the
-- Flock function whose statement fired it) and runs flock.__guard_model_insert.
CREATE FUNCTION flock._guard_model_insert() RETURNS trigger
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
CREATE TRIGGER models_guard_insert BEFORE INSERT ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._guard_model_insert();

CREATE FUNCTION flock._guard_model_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE FUNCTION flock._forget_dropped_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = OLD.name) THEN
    DELETE FROM flock.model_grants g WHERE g.name = OLD.name;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER models_forget_dropped AFTER DELETE ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._forget_dropped_model();

-- ---------------------------------------------------------------------------------------------
-- Data set snapshots: a query's result frozen as table flock_data."name@N", with its row count,
-- columns and an order-independent content hash.
-- ---------------------------------------------------------------------------------------------
CREATE SCHEMA flock_data;
COMMENT ON SCHEMA flock_data IS 'immutable data set snapshots taken by flock.snapshot_dataset, one table per version';
GRANT USAGE ON SCHEMA flock_data TO PUBLIC;

CREATE TABLE flock.datasets (
  name         text        NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$'),
  version      integer     NOT NULL CHECK (version > 0),
  table_name   text        NOT NULL,       -- flock_data."name@N"
  query        text        NOT NULL,
  search_path  text        NOT NULL,       -- the search_path the query ran with (and is re-run with)
  sources      text[]      NOT NULL DEFAULT '{}',  -- tables and views the query read
  row_count    bigint      NOT NULL,
  columns      jsonb       NOT NULL,       -- [{"name": ..., "type": ...}] in column order
  content_hash text        NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
  run_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
  created_by   name        NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  description  text,
  PRIMARY KEY (name, version)
);
COMMENT ON TABLE flock.datasets IS 'data set snapshots (immutable): name@version, where the rows are, and their hash';
SELECT pg_catalog.pg_extension_config_dump('flock.datasets', '');
ALTER TABLE flock.datasets ENABLE ROW LEVEL SECURITY;
-- Visible to the roles that may read the snapshot's table.
CREATE POLICY datasets_visible ON flock.datasets FOR SELECT
  USING (pg_catalog.has_table_privilege(pg_catalog.to_regclass(table_name), 'SELECT'));
REVOKE ALL ON flock.datasets FROM PUBLIC;
GRANT SELECT ON flock.datasets TO PUBLIC;

CREATE FUNCTION flock._forbid_dataset_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  RAISE EXCEPTION 'data set % is immutable', TG_TABLE_NAME USING ERRCODE = 'object_not_in_prerequisite_state',
    HINT = 'Take a new version with flock.snapshot_dataset.';
END $$;

-- Row count, columns and content hash of a table. The hash is
--   sha256( columns::text || E'\n' || row_count || H )
-- where H is sha256 over the concatenated chunk hashes of the sorted per-row hashes
-- sha256(convert_to(row::text, 'UTF8')) taken 8192 at a time: independent of row order, sensitive
-- to every value, to duplicates and to the column names and types. Type output is pinned (UTC,
-- ISO dates, shortest exact floats) so the hash does not depend on session settings.
CREATE FUNCTION flock._table_hash(rel regclass, OUT row_count bigint, OUT columns jsonb, OUT content_hash text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp SET "TimeZone" = 'UTC' SET "DateStyle" = 'ISO, YMD'
SET "IntervalStyle" = 'postgres' SET extra_float_digits = '1' SET bytea_output = 'hex' AS $$
DECLARE
  chunks bytea;
BEGIN
  SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod))
                            ORDER BY a.attnum), '[]'::jsonb)
    INTO columns
    FROM pg_attribute a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped;
  EXECUTE format($q$
    WITH r AS (SELECT sha256(convert_to(t::text, 'UTF8')) AS h FROM %s t),
         s AS (SELECT h, (row_number() OVER (ORDER BY h) - 1) / 8192 AS chunk FROM r),
         c AS (SELECT chunk, count(*) AS n, sha256(string_agg(h, ''::bytea ORDER BY h)) AS ch FROM s GROUP BY chunk)
    SELECT coalesce(sum(n), 0)::bigint, string_agg(ch, ''::bytea ORDER BY chunk) FROM c $q$, rel)
    INTO row_count, chunks;
  content_hash := encode(sha256(convert_to(columns::text || E'\n' || row_count, 'UTF8') || sha256(coalesce(chunks, ''::bytea))), 'hex');
END $$;

-- The catalog row of a data set reference 'name' (latest) or 'name@N', as the calling role sees it.
CREATE FUNCTION flock._resolve_dataset(ref text) RETURNS flock.datasets
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  ds_name text := split_part(ref, '@', 1);
  tag text;
  result flock.datasets;
BEGIN
  IF ref IS NULL THEN
    RAISE EXCEPTION 'data set reference is NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF strpos(ref, '@') > 0 THEN
    tag := substr(ref, length(ds_name) + 2);
    IF tag !~ '^[0-9]{1,9}$' THEN
      RAISE EXCEPTION 'invalid data set reference "%"', ref USING ERRCODE = 'invalid_parameter_value',
        HINT = 'Use ''name'' for the latest version or ''name@N'' for version N.';
    END IF;
    SELECT * INTO result FROM flock.datasets d WHERE d.name = ds_name AND d.version = tag::integer;
  ELSE
    SELECT * INTO result FROM flock.datasets d WHERE d.name = ds_name ORDER BY d.version DESC LIMIT 1;
  END IF;
  IF FOUND THEN
    RETURN result;
  END IF;
  IF EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = ds_name) THEN
    RAISE EXCEPTION 'data set "%" has no version %', ds_name, tag USING ERRCODE = 'undefined_object',
      HINT = format('Versions of "%s" you can read: %s.', ds_name,
                    (SELECT string_agg(d.version::text, ', ' ORDER BY d.version) FROM flock.datasets d WHERE d.name = ds_name));
  END IF;
  IF flock._sees_all(current_user) THEN
    RAISE EXCEPTION 'data set "%" does not exist', ds_name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT name, version FROM flock.datasets; take one with flock.snapshot_dataset.';
  END IF;
  RAISE EXCEPTION 'permission denied for data set "%"', ds_name USING ERRCODE = 'insufficient_privilege',
    DETAIL = 'Either the data set does not exist or you may not read it; the two cases give the same error.',
    HINT = 'A data set is readable by the role that took it and the roles it granted SELECT on its table to.';
END $$;

-- Stores the caller's temp table `tmp` (holding the query result) as the next version of data set
-- `name`, recording the query, search_path and sources it was filled with. Called only by
-- flock.snapshot_dataset (C), which has just run that query as the caller into `tmp`: not
-- executable by PUBLIC, so recorded provenance is what actually ran. It reads nothing but that
-- table, so it gives no access beyond the caller's own.
CREATE FUNCTION flock._store_snapshot(name text, query text, search_path text, description text, tmp regclass,
                                      sources text[]) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  next_version integer;
  relname text;
  qualified text;
  h record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_class c
                  WHERE c.oid = tmp AND c.relkind = 'r' AND c.relpersistence = 't'
                    AND c.relnamespace = pg_my_temp_schema() AND pg_has_role(caller, c.relowner, 'USAGE')) THEN
    RAISE EXCEPTION 'relation % is not a temporary table of yours', tmp USING ERRCODE = 'insufficient_privilege',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  IF name IS NULL OR name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' OR coalesce(query, '') = '' THEN
    RAISE EXCEPTION 'invalid snapshot' USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  IF EXISTS (SELECT 1 FROM unnest(sources) AS src
              WHERE src NOT LIKE 'pg\_temp.%'
                AND NOT coalesce(has_any_column_privilege(caller, to_regclass(src), 'SELECT'), false)) THEN
    RAISE EXCEPTION 'invalid snapshot sources' USING ERRCODE = 'insufficient_privilege',
      HINT = 'Take snapshots with flock.snapshot_dataset(name, query).';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('flock.datasets'), hashtext(name));
  IF EXISTS (SELECT 1 FROM flock.datasets d WHERE d.name = _store_snapshot.name)
     AND NOT flock._sees_all(caller)
     AND NOT EXISTS (SELECT 1 FROM flock.datasets d JOIN pg_roles c ON c.rolname = d.created_by
                      WHERE d.name = _store_snapshot.name AND pg_has_role(caller, c.oid, 'USAGE')) THEN
    RAISE EXCEPTION 'permission denied to add a version to data set "%"', name USING ERRCODE = 'insufficient_privilege',
      HINT = 'The name is taken by another role''s data set; choose another name.';
  END IF;
  SELECT coalesce(max(d.version), 0) + 1 INTO next_version FROM flock.datasets d WHERE d.name = _store_snapshot.name;
  relname := name || '@' || next_version;
  qualified := format('flock_data.%I', relname);
  EXECUTE format('CREATE TABLE %s AS TABLE %s', qualified, tmp);
  EXECUTE format('CREATE TRIGGER immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON %s '
                 'FOR EACH STATEMENT EXECUTE FUNCTION flock._forbid_dataset_change()', qualified);
  EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', qualified);
  EXECUTE format('GRANT SELECT ON %s TO %I WITH GRANT OPTION', qualified, caller);
  EXECUTE format('COMMENT ON TABLE %s IS %L', qualified, format('flock data set %s (immutable snapshot)', relname));
  SELECT * INTO h FROM flock._table_hash(qualified::regclass);
  INSERT INTO flock.datasets (name, version, table_name, query, search_path, sources, row_count, columns,
                              content_hash, created_by, description)
  VALUES (name, next_version, qualified, query, coalesce(search_path, ''), coalesce(sources, '{}'), h.row_count,
          h.columns, h.content_hash, caller, description);
  RETURN relname;
END $$;
REVOKE ALL ON FUNCTION flock._store_snapshot(text, text, text, text, regclass, text[]) FROM PUBLIC;

-- The tables, views and foreign tables a view reads (its rewrite rule's dependencies).
CREATE FUNCTION flock._view_sources(view_oid regclass) RETURNS text[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(array_agg(DISTINCT format('%s.%I', CASE WHEN n.nspname LIKE 'pg\_temp%' THEN 'pg_temp'
                                                          ELSE quote_ident(n.nspname) END, c.relname)), '{}')
    FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class c ON c.oid = d.refobjid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE r.ev_class = view_oid AND d.refobjid <> view_oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
$$;

-- Runs `query` as the calling role, with search_path `path`, into a temp table; returns the temp
-- table and the tables the query reads (from a temp view's dependencies). Only the query itself
-- resolves names with `path`; the rest of the function keeps its pinned search_path.
CREATE FUNCTION flock._run_into_temp(query text, path text, OUT tmp regclass, OUT sources text[])
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  base text := 'flock_snapshot_' || replace(gen_random_uuid()::text, '-', '');
  body text;
BEGIN
  body := regexp_replace(query, '[\s;]+$', '');
  IF body IS NULL OR body = '' THEN
    RAISE EXCEPTION 'query must not be empty' USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF path IS NULL THEN
    RAISE EXCEPTION 'search_path must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM set_config('search_path', path, true);
  EXECUTE format(E'CREATE TEMP TABLE %I AS SELECT * FROM (%s\n) AS snapshot', base, body);
  EXECUTE format(E'CREATE TEMP VIEW %I AS SELECT * FROM (%s\n) AS snapshot', base || '_v', body);
  PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
  tmp := format('pg_temp.%I', base)::regclass;
  sources := flock._view_sources(format('pg_temp.%I', base || '_v')::regclass);
  EXECUTE format('DROP VIEW pg_temp.%I', base || '_v');
END $$;

CREATE FUNCTION flock._check_dataset_name(name text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF name IS NULL THEN
    RAISE EXCEPTION 'data set name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  IF name !~ '^[A-Za-z_][A-Za-z0-9_.-]{0,49}$' THEN
    RAISE EXCEPTION 'invalid data set name "%"', name USING ERRCODE = 'invalid_name',
      HINT = 'A data set name starts with a letter or underscore and has up to 50 letters, digits, _ . or -.';
  END IF;
END $$;

-- Runs the query as current_user with its search_path (flock._run_into_temp), then stores the
-- result with that query, search_path and the sources read (flock._store_snapshot, for current_user).
CREATE FUNCTION flock.snapshot_dataset(name text, query text, description text DEFAULT NULL) RETURNS text
  AS 'MODULE_PATHNAME', 'flock_snapshot_dataset' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.snapshot_dataset(text, text, text) IS
  'runs query as the caller and freezes its result as the next version of data set name; returns ''name@version''';

-- May current_user act as `role` (a superuser, or a member of it)? False for a role that is gone.
CREATE FUNCTION flock._may_act_as(role name) RETURNS boolean
  AS 'MODULE_PATHNAME', 'flock_may_act_as' LANGUAGE C STABLE STRICT;

-- Runs data set name@version's recorded query again as the role that recorded it (created_by),
-- inside a security-restricted operation, with its recorded search_path (pg_temp last unless it
-- names pg_temp), and hashes the result as flock._table_hash does. For roles that may act as the
-- author only (42501 otherwise); the data set is read as the calling role.
CREATE FUNCTION flock._source_hash(name text, version integer,
                                   OUT row_count bigint, OUT columns jsonb, OUT content_hash text)
  AS 'MODULE_PATHNAME', 'flock_source_hash' LANGUAGE C VOLATILE STRICT SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION flock.verify_dataset_report(ref text, check_source boolean DEFAULT true) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  d flock.datasets;
  stored record;
  source record;
  stored_json jsonb;
  source_json jsonb := NULL;
  reason text;
BEGIN
  d := flock._resolve_dataset(ref);
  BEGIN
    SELECT * INTO stored FROM flock._table_hash(d.table_name::regclass);
    stored_json := jsonb_build_object('ok', stored.content_hash = d.content_hash AND stored.row_count = d.row_count,
                                      'row_count', stored.row_count, 'content_hash', stored.content_hash);
  EXCEPTION WHEN undefined_table THEN
    stored_json := jsonb_build_object('ok', false, 'error', format('table %s is missing', d.table_name));
  END;
  IF check_source THEN
    -- The recorded query runs only as its author: a verifier who may not act as that role gets
    -- the stored-hash check alone, and is told so.
    IF NOT flock._may_act_as(d.created_by) THEN
      reason := CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = d.created_by)
                     THEN format('its author, role %I, no longer exists', d.created_by)
                     ELSE format('it runs only as its author %I, and %I is neither a superuser nor a member of %I',
                                 d.created_by, current_user, d.created_by) END;
      RAISE NOTICE 'the query of data set %@% was not run again: %', d.name, d.version, reason
        USING HINT = 'Only the stored rows were checked against the recorded hash. The author, a member of that role '
                     'or a superuser can check the source too.';
      source_json := jsonb_build_object('ok', NULL, 'checked', false, 'reason', reason);
    ELSE
      BEGIN
        SELECT * INTO source FROM flock._source_hash(d.name, d.version);
        source_json := jsonb_build_object('ok', source.content_hash = d.content_hash AND source.row_count = d.row_count,
                                          'row_count', source.row_count, 'content_hash', source.content_hash,
                                          'run_as', d.created_by);
      EXCEPTION WHEN OTHERS THEN
        source_json := jsonb_build_object('ok', false, 'error', SQLERRM, 'sqlstate', SQLSTATE, 'run_as', d.created_by);
      END;
    END IF;
  END IF;
  RETURN jsonb_build_object('ref', d.name || '@' || d.version, 'row_count', d.row_count, 'content_hash', d.content_hash,
                            'stored', stored_json, 'source', source_json,
                            'ok', (stored_json->>'ok')::boolean AND coalesce((source_json->>'ok')::boolean, true));
END $$;
COMMENT ON FUNCTION flock.verify_dataset_report(text, boolean) IS
  're-hashes a snapshot (and, with check_source, the result of its query run again now as its author) against the recorded hash';

CREATE FUNCTION flock.verify_dataset(ref text, check_source boolean DEFAULT true) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
  SELECT (flock.verify_dataset_report(ref, check_source)->>'ok')::boolean
$$;
COMMENT ON FUNCTION flock.verify_dataset(text, boolean) IS
  'true when the snapshot still hashes to its recorded hash (and, with check_source, its query still gives the same data)';

CREATE FUNCTION flock._drop_dataset(name text, version integer DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  caller name := flock._caller();
  d record;
  users text;
  n integer := 0;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.datasets x WHERE x.name = _drop_dataset.name
                 AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version)
                 AND (flock._sees_all(caller) OR has_table_privilege(caller, to_regclass(x.table_name), 'SELECT'))) THEN
    IF flock._sees_all(caller) THEN
      RAISE EXCEPTION 'data set "%" does not exist', name || coalesce('@' || version, '') USING ERRCODE = 'undefined_object',
        HINT = 'See SELECT name, version FROM flock.datasets.';
    END IF;
    RAISE EXCEPTION 'permission denied for data set "%"', name || coalesce('@' || version, '')
      USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'Either the data set does not exist or you may not read it; the two cases give the same error.';
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = caller) AND EXISTS (
       SELECT 1 FROM flock.datasets x WHERE x.name = _drop_dataset.name
          AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version) AND x.created_by <> caller) THEN
    RAISE EXCEPTION 'permission denied to drop data set "%"', name || coalesce('@' || version, '')
      USING ERRCODE = 'insufficient_privilege', HINT = 'Only the role that took a snapshot, or a superuser, may drop it.';
  END IF;
  SELECT string_agg(DISTINCT format('%s@%s', r.model_name, r.model_version), ', ') INTO users
    FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id
   WHERE i.dataset_name = _drop_dataset.name AND (_drop_dataset.version IS NULL OR i.dataset_version = _drop_dataset.version);
  IF users IS NOT NULL THEN
    RAISE EXCEPTION 'cannot drop data set "%": models were trained on it', name || coalesce('@' || version, '')
      USING ERRCODE = 'dependent_objects_still_exist', DETAIL = format('Trained on it: %s.', users),
            HINT = 'Drop those model versions first; their training records go with them.';
  END IF;
  FOR d IN SELECT * FROM flock.datasets x WHERE x.name = _drop_dataset.name
             AND (_drop_dataset.version IS NULL OR x.version = _drop_dataset.version) LOOP
    EXECUTE format('DROP TABLE IF EXISTS %s', d.table_name);
    DELETE FROM flock.datasets x WHERE x.name = d.name AND x.version = d.version;
    n := n + 1;
  END LOOP;
  RETURN n;
END $$;
REVOKE ALL ON FUNCTION flock._drop_dataset(text, integer) FROM PUBLIC;
-- The entry point: acts for current_user at the call and runs flock._drop_dataset.
CREATE FUNCTION flock.drop_dataset(name text, version integer DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION flock.drop_dataset(text, integer) IS
  'drops one version of a data set, or all; only its creator or a superuser, and not while a model records training on it';
