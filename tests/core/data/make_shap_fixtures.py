#!/usr/bin/python3
"""Writes XGBoost's own SHAP values for the XGBoost fixtures, the oracle of tests/core/explain_test.cpp.

    /usr/bin/python3 tests/core/data/make_shap_fixtures.py

For each tests/core/data/xgb/<name>.model.json with its <name>.data.json (make_xgb_fixtures.py), it
writes <name>.shap.json: {"contribs": pred_contribs, "interactions": pred_interactions} on the data
file's inputs (NaN = missing), flattened in XGBoost's layout (rows x groups x (features + 1) [x
(features + 1)]; one group for regression and binary models).
"""
import glob
import json
import os

import numpy as np
import xgboost as xgb

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xgb")


def main():
    for model_path in sorted(glob.glob(os.path.join(DIR, "*.model.json"))):
        name = os.path.basename(model_path)[: -len(".model.json")]
        with open(os.path.join(DIR, name + ".data.json")) as f:
            data = json.load(f)
        X = np.array([[np.nan if v is None else v for v in row] for row in data["inputs"]], dtype=np.float32)
        booster = xgb.Booster(params={"nthread": 1})
        booster.load_model(model_path)
        d = xgb.DMatrix(X, missing=np.nan, feature_names=booster.feature_names)
        contribs = booster.predict(d, pred_contribs=True)
        inter = booster.predict(d, pred_interactions=True)
        out = {"shape": list(contribs.shape), "contribs": contribs.astype(np.float64).ravel().tolist(),
               "interactions_shape": list(inter.shape),
               "interactions": inter.astype(np.float64).ravel().tolist()}
        with open(os.path.join(DIR, name + ".shap.json"), "w") as f:
            json.dump(out, f, separators=(",", ":"))
            f.write("\n")
        print(name, contribs.shape, inter.shape)


if __name__ == "__main__":
    main()
