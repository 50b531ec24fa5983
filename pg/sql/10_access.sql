-- Flock access control: grants, the privileges view and row-level security every governance part
-- reads through, and the checks its functions make. The parts after it: 11_aliases, 12_datasets,
-- 13_training, 19_inference_log and 20_audit, 30_lineage.
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
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE sql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = who), false)
$$;

-- Raises the error for a model that `who` cannot see: 42704 when `who` sees everything (so the
-- model really does not exist), else 42501, the same whether the model exists or not.
CREATE FUNCTION flock._model_not_found(model_name text, who name) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF flock._sees_all(who) THEN
    RAISE EXCEPTION 'model "%" does not exist', model_name USING ERRCODE = 'undefined_object',
      HINT = 'See SELECT name, version FROM flock.models; register one with flock.register_model.';
  END IF;
  RAISE EXCEPTION 'permission denied for model "%"', model_name USING ERRCODE = 'insufficient_privilege',
    DETAIL = 'Either the model does not exist or you have no privilege on it; the two cases give the same error.',
    HINT = 'A model is visible to the roles that registered it, superusers, and roles granted access with flock.grant_model(name, role, ''use'').';
END $$;

-- Tells every backend that name resolutions may have changed: a statement on flock.models fires
-- its statement-level invalidation trigger even when it touches no row.
CREATE FUNCTION flock._touch_catalog() RETURNS void
LANGUAGE sql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  UPDATE flock.models SET description = description WHERE false
$$;
REVOKE ALL ON FUNCTION flock._touch_catalog() FROM PUBLIC;

-- Checks that the caller manages model_name; raises 42501 (or 42704 for a missing model seen by
-- a role that sees everything) otherwise. `action` completes "permission denied to ...".
CREATE FUNCTION flock._require_manage(model_name text, action text) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- ---------------------------------------------------------------------------------------------
-- Granting and revoking.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock._check_grant_args(model text, role name, privilege text) RETURNS void
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
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
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.grant_model(text, name, text) IS
  'gives a role (or PUBLIC) ''use'' or ''manage'' on every version of a model';

CREATE FUNCTION flock._revoke_model(model text, role name, privilege text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION flock.revoke_model(text, name, text) IS
  'takes back a role''s privilege on a model (both when privilege is NULL); returns how many grants went';

-- ---------------------------------------------------------------------------------------------
-- Guards on the catalog: new versions of an existing model need 'manage'; grants of a model
-- whose last version is gone are removed.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION flock.__guard_model_insert() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
  AS 'MODULE_PATHNAME', 'flock_entry' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE TRIGGER models_guard_insert BEFORE INSERT ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._guard_model_insert();

CREATE FUNCTION flock._forget_dropped_model() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM flock.models m WHERE m.name = OLD.name) THEN
    DELETE FROM flock.model_grants g WHERE g.name = OLD.name;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER models_forget_dropped AFTER DELETE ON flock.models
  FOR EACH ROW EXECUTE FUNCTION flock._forget_dropped_model();
