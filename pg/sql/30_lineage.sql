-- Flock lineage: the graph from tables through data sets, training runs and models to aliases and
-- inference batches, and its OpenLineage events. Last: it reads every part before it.

-- ---------------------------------------------------------------------------------------------
-- Lineage: data set versions -> training runs -> model versions -> aliases -> inference batches,
-- plus the tables a snapshot read. Runs as the caller: it shows what row-level security lets it see.
-- ---------------------------------------------------------------------------------------------
-- The start node of a reference: 'dataset:name[@N]' or a model reference (optionally 'model:...').
CREATE FUNCTION flock._lineage_start(ref text, OUT kind text, OUT node text)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  m flock.models;
  d flock.datasets;
BEGIN
  IF ref LIKE 'dataset:%' THEN
    d := flock._resolve_dataset(substr(ref, 9));
    kind := 'dataset';
    node := d.name || '@' || d.version;
  ELSE
    m := flock._resolve(CASE WHEN ref LIKE 'model:%' THEN substr(ref, 7) ELSE ref END);
    kind := 'model';
    node := m.name || '@' || m.version;
  END IF;
END $$;

-- The object without its top-level null members (nested values are kept as they are).
CREATE FUNCTION flock._drop_null_members(obj jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
    FROM jsonb_each(obj) AS e WHERE jsonb_typeof(e.value) <> 'null'
$$;

CREATE FUNCTION flock._utc(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

CREATE FUNCTION flock.lineage(ref text, direction text DEFAULT 'both')
RETURNS TABLE (depth integer, from_kind text, from_ref text, relation text, to_kind text, to_ref text,
               at timestamptz, actor name, detail jsonb)
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  start record;
BEGIN
  IF direction IS NULL OR direction NOT IN ('both', 'upstream', 'downstream') THEN
    RAISE EXCEPTION 'unknown lineage direction "%"', direction USING ERRCODE = 'invalid_parameter_value',
      HINT = 'Use ''upstream'' (what it came from), ''downstream'' (what came of it) or ''both''.';
  END IF;
  SELECT * INTO start FROM flock._lineage_start(ref);
  RETURN QUERY
  WITH RECURSIVE
  edges (from_kind, from_ref, relation, to_kind, to_ref, at, actor, detail) AS (
    SELECT 'table', s.src, 'snapshot_into', 'dataset', d.name || '@' || d.version, d.created_at, d.created_by,
           jsonb_build_object('query', d.query)
      FROM flock.datasets d CROSS JOIN LATERAL unnest(d.sources) AS s(src)
    UNION ALL
    SELECT 'dataset', i.dataset_name || '@' || i.dataset_version, 'used_by', 'training_run', r.run_id::text,
           r.logged_at, r.logged_by, NULL::jsonb
      FROM flock.training_inputs i JOIN flock.training_runs r ON r.id = i.run_id
    UNION ALL
    SELECT 'training_run', r.run_id::text, 'produced', 'model', r.model_name || '@' || r.model_version,
           r.logged_at, r.logged_by,
           flock._drop_null_members(jsonb_build_object('params', r.params, 'metrics', r.metrics, 'code_ref', r.code_ref,
                                                       'code_sha256', r.code_sha256, 'environment', r.environment))
      FROM flock.training_runs r
    UNION ALL
    SELECT 'model', a.name || '@' || a.version, 'aliased_as', 'alias', a.name || '@' || a.alias, a.set_at, a.set_by,
           jsonb_strip_nulls(jsonb_build_object('comment', a.comment))
      FROM flock.aliases a
    UNION ALL
    -- Retention drops and erasures (50_privacy.sql).
    SELECT p.from_kind, p.from_ref, p.relation, p.to_kind, p.to_ref, p.at, p.actor, p.detail
      FROM flock.privacy_lineage p
  ),
  down (depth, from_kind, from_ref, relation, to_kind, to_ref, at, actor, detail) AS (
    SELECT 1, e.* FROM edges e
     WHERE direction <> 'upstream' AND e.from_kind = start.kind AND e.from_ref = start.node
    UNION
    SELECT w.depth + 1, e.* FROM down w JOIN edges e ON e.from_kind = w.to_kind AND e.from_ref = w.to_ref
  ),
  up (depth, from_kind, from_ref, relation, to_kind, to_ref, at, actor, detail) AS (
    SELECT -1, e.* FROM edges e
     WHERE direction <> 'downstream' AND e.to_kind = start.kind AND e.to_ref = start.node
    UNION
    SELECT w.depth - 1, e.* FROM up w JOIN edges e ON e.to_kind = w.from_kind AND e.to_ref = w.from_ref
  ),
  scored_models (depth, name, version) AS (
    SELECT min(x.depth), split_part(x.node, '@', 1), split_part(x.node, '@', 2)::integer
      FROM (SELECT 0 AS depth, start.node WHERE start.kind = 'model' AND direction <> 'upstream'
            UNION ALL SELECT w.depth, w.to_ref FROM down w WHERE w.to_kind = 'model') x
     GROUP BY 2, 3
  ),
  inference AS (
    SELECT sm.depth + 1, 'model', l.model_name || '@' || l.model_version, 'scored', 'inference',
           format('%s@%s/%s/%s%s', l.model_name, l.model_version, l.role, flock._utc(l.logged_at),
                  coalesce('/' || l.query_id, '')),
           l.logged_at, l.role, jsonb_strip_nulls(jsonb_build_object('rows', sum(l.n_rows), 'query_id', l.query_id))
      FROM scored_models sm
      JOIN flock.inference_log l ON l.model_name = sm.name AND l.model_version = sm.version
     GROUP BY sm.depth, l.model_name, l.model_version, l.role, l.query_id, l.logged_at
  ),
  walked AS (
    SELECT * FROM down UNION ALL SELECT * FROM up UNION ALL SELECT * FROM inference
  )
  SELECT e.depth, e.from_kind, e.from_ref, e.relation, e.to_kind, e.to_ref, e.at, e.actor, e.detail
    FROM (SELECT DISTINCT ON (w.from_kind, w.from_ref, w.relation, w.to_kind, w.to_ref) w.*
            FROM walked w
           ORDER BY w.from_kind, w.from_ref, w.relation, w.to_kind, w.to_ref, abs(w.depth)) e
   ORDER BY e.depth, e.from_kind, e.from_ref, e.relation, e.to_ref;
END $$;
COMMENT ON FUNCTION flock.lineage(text, text) IS
  'lineage graph of a model reference or ''dataset:name@N'' as edges: tables -> data sets -> training runs -> models -> aliases, inference';

-- OpenLineage (https://openlineage.io/spec/2-0-2/OpenLineage.json) run events for the lineage of
-- a reference: one COMPLETE event per snapshot, training run and logged inference batch.
CREATE FUNCTION flock.openlineage(ref text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  producer text := 'urn:flock:' || coalesce((SELECT e.extversion FROM pg_extension e WHERE e.extname = 'flock'), 'dev');
  ns text := format('postgres://%s:%s', coalesce(host(inet_server_addr()), 'localhost'), current_setting('port'));
  db text := current_database();
  run_schema text := 'https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent';
  events jsonb;
BEGIN
  WITH g AS (SELECT * FROM flock.lineage(ref, 'both')),
  nodes (kind, node) AS (
    SELECT g.from_kind, g.from_ref FROM g UNION SELECT g.to_kind, g.to_ref FROM g
    UNION SELECT * FROM flock._lineage_start(ref)
  ),
  facet (base) AS (SELECT jsonb_build_object('_producer', producer)),
  ds_json AS (  -- every data set version as an OpenLineage dataset
    SELECT d.name || '@' || d.version AS node, d.*,
           jsonb_build_object('namespace', ns, 'name', format('%s.flock_data.%s', db, d.name || '@' || d.version),
             'facets', jsonb_build_object(
               'schema', (SELECT base FROM facet) || jsonb_build_object(
                   '_schemaURL', 'https://openlineage.io/spec/facets/1-0-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet',
                   'fields', d.columns),
               'version', (SELECT base FROM facet) || jsonb_build_object(
                   '_schemaURL', 'https://openlineage.io/spec/facets/1-0-0/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet',
                   'datasetVersion', d.version::text),
               'flock_dataset', (SELECT base FROM facet) || jsonb_build_object(
                   '_schemaURL', 'urn:flock:facets:DatasetSnapshotFacet',
                   'ref', d.name || '@' || d.version, 'rowCount', d.row_count, 'contentHash', d.content_hash,
                   'createdBy', d.created_by))) AS js
      FROM flock.datasets d
     WHERE (d.name || '@' || d.version) IN (SELECT n.node FROM nodes n WHERE n.kind = 'dataset')
  ),
  model_json AS (
    SELECT m.name || '@' || m.version AS node,
           jsonb_build_object('namespace', ns, 'name', format('%s.flock.models.%s', db, m.name || '@' || m.version),
             'facets', jsonb_build_object(
               'version', (SELECT base FROM facet) || jsonb_build_object(
                   '_schemaURL', 'https://openlineage.io/spec/facets/1-0-0/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet',
                   'datasetVersion', m.version::text),
               'flock_model', (SELECT base FROM facet) || jsonb_build_object(
                   '_schemaURL', 'urn:flock:facets:ModelVersionFacet',
                   'ref', m.name || '@' || m.version, 'format', m.format, 'sha256', m.sha256, 'createdBy', m.created_by,
                   'aliases', coalesce((SELECT jsonb_agg(a.alias ORDER BY a.alias) FROM flock.aliases a
                                         WHERE a.name = m.name AND a.version = m.version), '[]'::jsonb)))) AS js
      FROM flock.models m
     WHERE (m.name || '@' || m.version) IN (SELECT n.node FROM nodes n WHERE n.kind = 'model')
  ),
  job_type (kind, js) AS (
    SELECT k, (SELECT base FROM facet) || jsonb_build_object(
             '_schemaURL', 'https://openlineage.io/spec/facets/2-0-2/JobTypeJobFacet.json#/$defs/JobTypeJobFacet',
             'processingType', 'BATCH', 'integration', 'FLOCK', 'jobType', k)
      FROM unnest(ARRAY['SNAPSHOT', 'TRAINING', 'INFERENCE', 'PRIVACY']) AS k
  ),
  ev (at, js) AS (
    SELECT d.created_at, jsonb_build_object(
             'eventType', 'COMPLETE', 'eventTime', flock._utc(d.created_at),
             'run', jsonb_build_object('runId', d.run_id),
             'job', jsonb_build_object('namespace', ns, 'name', 'flock.snapshot_dataset.' || d.name,
                      'facets', jsonb_build_object(
                        'sql', (SELECT base FROM facet) || jsonb_build_object(
                            '_schemaURL', 'https://openlineage.io/spec/facets/1-0-1/SQLJobFacet.json#/$defs/SQLJobFacet',
                            'query', d.query),
                        'jobType', (SELECT jt.js FROM job_type jt WHERE jt.kind = 'SNAPSHOT'))),
             'inputs', coalesce((SELECT jsonb_agg(jsonb_build_object('namespace', ns, 'name',
                                         db || '.' || replace(s.src, '"', '')) ORDER BY s.src)
                                   FROM unnest(d.sources) AS s(src)), '[]'::jsonb),
             'outputs', jsonb_build_array(d.js),
             'producer', producer, 'schemaURL', run_schema)
      FROM ds_json d
    UNION ALL
    SELECT r.logged_at, jsonb_build_object(
             'eventType', 'COMPLETE', 'eventTime', flock._utc(r.logged_at),
             'run', jsonb_build_object('runId', r.run_id, 'facets', jsonb_build_object(
                      'flock_training', (SELECT base FROM facet) || jsonb_build_object(
                          '_schemaURL', 'urn:flock:facets:TrainingRunFacet',
                          'params', r.params, 'metrics', r.metrics, 'environment', r.environment,
                          'loggedBy', r.logged_by))),
             'job', jsonb_build_object('namespace', ns, 'name', 'flock.train.' || r.model_name,
                      'facets', flock._drop_null_members(jsonb_build_object(
                        'jobType', (SELECT jt.js FROM job_type jt WHERE jt.kind = 'TRAINING'),
                        'sourceCodeLocation', CASE WHEN r.code_ref ~ '^[A-Za-z][A-Za-z0-9+.-]*://' THEN
                            (SELECT base FROM facet) || jsonb_build_object(
                              '_schemaURL', 'https://openlineage.io/spec/facets/1-0-1/SourceCodeLocationJobFacet.json#/$defs/SourceCodeLocationJobFacet',
                              'type', 'url', 'url', r.code_ref) END,
                        'flock_code', (SELECT base FROM facet) || flock._drop_null_members(jsonb_build_object(
                            '_schemaURL', 'urn:flock:facets:TrainingCodeFacet',
                            'codeRef', r.code_ref, 'codeSha256', r.code_sha256))))),
             'inputs', coalesce((SELECT jsonb_agg(d.js ORDER BY d.node) FROM flock.training_inputs i
                                   JOIN ds_json d ON d.name = i.dataset_name AND d.version = i.dataset_version
                                  WHERE i.run_id = r.id), '[]'::jsonb)
                       || coalesce((SELECT jsonb_agg(jsonb_build_object('namespace', ns, 'name',
                                            format('%s.flock_data.%s@%s', db, i.dataset_name, i.dataset_version)))
                                      FROM flock.training_inputs i
                                     WHERE i.run_id = r.id AND NOT EXISTS (
                                       SELECT 1 FROM ds_json d WHERE d.name = i.dataset_name AND d.version = i.dataset_version)),
                                   '[]'::jsonb),
             'outputs', coalesce((SELECT jsonb_agg(mj.js) FROM model_json mj
                                   WHERE mj.node = r.model_name || '@' || r.model_version), '[]'::jsonb),
             'producer', producer, 'schemaURL', run_schema)
      FROM flock.training_runs r
     WHERE r.run_id::text IN (SELECT n.node FROM nodes n WHERE n.kind = 'training_run')
    UNION ALL
    SELECT g.at, jsonb_build_object(
             'eventType', 'COMPLETE', 'eventTime', flock._utc(g.at),
             'run', jsonb_build_object('runId', md5(g.to_ref)::uuid, 'facets', jsonb_build_object(
                      'flock_inference', (SELECT base FROM facet) || jsonb_build_object(
                          '_schemaURL', 'urn:flock:facets:InferenceBatchFacet',
                          'batch', g.to_ref, 'role', g.actor, 'rows', g.detail->'rows', 'queryId', g.detail->'query_id'))),
             'job', jsonb_build_object('namespace', ns, 'name', 'flock.predict.' || split_part(g.from_ref, '@', 1),
                      'facets', jsonb_build_object('jobType', (SELECT jt.js FROM job_type jt WHERE jt.kind = 'INFERENCE'))),
             'inputs', coalesce((SELECT jsonb_agg(mj.js) FROM model_json mj WHERE mj.node = g.from_ref), '[]'::jsonb),
             'outputs', '[]'::jsonb,
             'producer', producer, 'schemaURL', run_schema)
      FROM g WHERE g.relation = 'scored'
    UNION ALL
    -- Retention drops and erasures (50_privacy.sql): what they changed, never a subject's values.
    SELECT g.at, jsonb_build_object(
             'eventType', 'COMPLETE', 'eventTime', flock._utc(g.at),
             'run', jsonb_build_object('runId', md5(g.to_ref || ' ' || g.from_kind || ' ' || g.from_ref)::uuid,
                      'facets', jsonb_build_object(
                        'flock_privacy', (SELECT base FROM facet) || jsonb_build_object(
                            '_schemaURL', 'urn:flock:facets:PrivacyActionFacet',
                            'action', g.relation, 'event', g.to_ref, 'actor', g.actor, 'detail', g.detail))),
             'job', jsonb_build_object('namespace', ns,
                      'name', CASE g.to_kind WHEN 'erasure' THEN 'flock.erase_subject' ELSE 'flock.apply_retention' END,
                      'facets', jsonb_build_object('jobType', (SELECT jt.js FROM job_type jt WHERE jt.kind = 'PRIVACY'))),
             'inputs', '[]'::jsonb,
             'outputs', coalesce((SELECT jsonb_agg(x.js) FROM (SELECT d.js FROM ds_json d WHERE g.from_kind = 'dataset' AND d.node = g.from_ref
                                                               UNION ALL
                                                               SELECT mj.js FROM model_json mj WHERE g.from_kind = 'model' AND mj.node = g.from_ref) x),
                                 jsonb_build_array(jsonb_build_object('namespace', ns, 'name',
                                   CASE g.from_kind WHEN 'dataset' THEN format('%s.flock_data.%s', db, g.from_ref)
                                                    WHEN 'model' THEN format('%s.flock.models.%s', db, g.from_ref)
                                                    ELSE db || '.' || g.from_ref END))),
             'producer', producer, 'schemaURL', run_schema)
      FROM g WHERE g.relation IN ('erased', 'retention_purged', 'retention_dropped')
  )
  SELECT coalesce(jsonb_agg(ev.js ORDER BY ev.at, ev.js->'job'->>'name'), '[]'::jsonb) INTO events FROM ev;
  RETURN events;
END $$;
COMMENT ON FUNCTION flock.openlineage(text) IS
  'the lineage of a reference as a JSON array of OpenLineage RunEvents (snapshots, training runs, inference batches, privacy actions)';
