#!/usr/bin/env bash
# The Flock demo: a private PostgreSQL cluster, a real data set (sklearn's breast cancer data),
# three models trained by sklearn / xgboost, registered with the flockctl CLI and scored in SQL.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
models=$PWD/$build_dir/models
flockctl=$PWD/$build_dir/cli/flockctl
source scripts/cluster.sh

if [ ! -f "$models/manifest.json" ]; then
  /usr/bin/python3 tools/models/make_models.py --out "$models"
fi

start_private_cluster
echo "== private cluster on port $PGPORT (data in $CLUSTER_DIR)"

run() { echo; echo "\$ $*"; "$@"; }
sql() { echo; echo "=> $1"; psql -X -q -v ON_ERROR_STOP=1 -P pager=off -c "$1"; }

# The data set as a table: every feature a double precision column, named as in the CSV header.
header=$(head -1 "$models/breast_cancer.csv")
columns=$(echo "$header" | tr ',' '\n' | sed -e 's/^id$/id integer PRIMARY KEY/' -e 's/^target$/target integer/' \
  -e '/ integer/!s/$/ double precision/' | paste -sd, -)
psql -X -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION flock;
CREATE TABLE patients ($columns);
\copy patients FROM '$models/breast_cancer.csv' WITH (FORMAT csv, HEADER true)
SQL
sql "SELECT count(*) AS patients, round(avg(target), 3) AS share_benign FROM patients"

run "$flockctl" register "$models/breast_cancer_rf.onnx" --name cancer_rf --description "sklearn RandomForest, 25 trees (ONNX-ML)"
run "$flockctl" register "$models/breast_cancer_logreg.onnx" --name cancer_logreg --description "sklearn LogisticRegression (ONNX-ML)"
run "$flockctl" register "$models/breast_cancer_xgb.json" --name cancer_xgb --description "XGBoost binary:logistic, 30 trees (JSON)"
run "$flockctl" models
run "$flockctl" info cancer_xgb

# Inference is part of the query: the record binds to the model's features by column name.
sql "SELECT id, target,
       flock.predict('cancer_rf', p)                              AS rf,
       flock.predict('cancer_xgb', p)                             AS xgb,
       round((flock.predict_proba('cancer_xgb', p))[2]::numeric, 4) AS p_benign_xgb,
       round((flock.predict_proba('cancer_logreg', p))[2]::numeric, 4) AS p_benign_logreg
     FROM patients p ORDER BY id LIMIT 8"

# Models are data: join the catalog and score every registered model on every row.
sql "SELECT m.name || '@' || m.version AS model, m.format,
       round(avg((flock.predict(m.model, p) = p.target)::int), 4) AS accuracy
     FROM patients p CROSS JOIN flock.models m GROUP BY 1, 2 ORDER BY 1"

# Where the models disagree.
sql "SELECT count(*) FILTER (WHERE flock.predict('cancer_rf', p) <> flock.predict('cancer_xgb', p)) AS rf_vs_xgb,
       count(*) FILTER (WHERE flock.predict('cancer_logreg', p) <> p.target) AS logreg_errors
     FROM patients p"

# Monitoring and fairness (issue 14): drift between a baseline and newer data, fairness by group.
sql "SELECT flock.snapshot_dataset('patients_baseline', 'SELECT * FROM patients WHERE id % 2 = 0')"
sql "SELECT feature, kind, round(psi::numeric, 3) AS psi, round(ks_statistic::numeric, 3) AS ks,
       ks_pvalue::numeric(10, 6) AS ks_p, round(chi2_pvalue::numeric, 4) AS chi2_p, drifted
     FROM flock.drift('cancer_xgb', 'patients_baseline@1', 'SELECT * FROM patients WHERE mean_radius > 13')
     ORDER BY psi DESC LIMIT 6"
sql "SELECT scope, \"group\", metric, round(value::numeric, 4) AS value
     FROM flock.fairness('cancer_logreg',
                         'SELECT *, CASE WHEN mean_texture > 19 THEN ''high'' ELSE ''low'' END AS texture FROM patients',
                         'texture', 'target')
     WHERE metric IN ('selection_rate', 'true_positive_rate', 'false_positive_rate')
        OR scope = 'summary'"

# Bad input gets a clear error with an SQLSTATE and a hint.
echo
echo "=> SELECT flock.predict('cancer_rf', (SELECT r FROM (SELECT 1.0 AS mean_radius) r))"
psql -X -q -v VERBOSITY=verbose -c "SELECT flock.predict('cancer_rf', (SELECT r FROM (SELECT 1.0 AS mean_radius) r))" 2>&1 | grep -v '^LOCATION' || true
echo
echo "== demo done; the cluster is stopped and removed"
