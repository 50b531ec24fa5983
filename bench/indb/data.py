"""Higgs-like benchmark data and PostgreSQL binary COPY helpers.

The UCI HIGGS data set has 28 float features per event: 21 low-level kinematic values (lepton and
four jets: transverse momentum, pseudorapidity, azimuth, b-tag; missing energy) and 7 high-level
invariant masses. `generate()` draws a synthetic table of the same shape and similar marginals
(log-normal momenta and masses, normal pseudorapidities, uniform azimuths, three b-tag levels)
with a fixed seed, where the masses and momenta shift a little with the (hidden) signal label --
enough for boosted trees to grow full-depth trees, which is all the benchmark needs. No download:
the benchmark runs offline and every run scores identical data.

The binary COPY helpers build and parse PostgreSQL's PGCOPY format with numpy record dtypes (no
per-value Python work), for the table layout (id bigint, 28 x real) and for predictions
(id bigint, prediction double precision).
"""

import io
import struct

import numpy as np

JETS = 4
FEATURES = (
    ["lepton_pt", "lepton_eta", "lepton_phi", "missing_energy_magnitude", "missing_energy_phi"]
    + [f"jet{j}_{q}" for j in range(1, JETS + 1) for q in ("pt", "eta", "phi", "btag")]
    + ["m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb"]
)
assert len(FEATURES) == 28

SEED = 20240917
VERSION = 1  # bump when generate() changes: cached feature files carry it in their name


def generate(n, seed=SEED):
    """Returns (X float32 [n, 28] in FEATURES order, y int8 [n])."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.53).astype(np.int8)
    s = y.astype(np.float64)
    cols = {}

    def pt(shift, sigma=0.55):
        return np.exp(rng.normal(-0.1 + shift * s, sigma, n))

    def eta(width=1.0):
        return np.clip(rng.normal(0.0, width - 0.12 * s, n), -2.7, 2.7)

    def phi():
        return rng.uniform(-1.74, 1.74, n)

    cols["lepton_pt"] = pt(0.10)
    cols["lepton_eta"] = eta()
    cols["lepton_phi"] = phi()
    cols["missing_energy_magnitude"] = pt(0.12, 0.6)
    cols["missing_energy_phi"] = phi()
    btag_levels = np.array([0.0, 1.086538, 2.173076])
    for j in range(1, JETS + 1):
        cols[f"jet{j}_pt"] = pt(0.08 - 0.02 * j)
        cols[f"jet{j}_eta"] = eta(1.05)
        cols[f"jet{j}_phi"] = phi()
        # signal events carry b jets more often
        p_b = 0.25 + 0.25 * s * (j <= 2)
        u = rng.random(n)
        cols[f"jet{j}_btag"] = btag_levels[np.where(u < p_b, 2, np.where(u < p_b + 0.1, 1, 0))]
    lead = cols["jet1_pt"] + cols["jet2_pt"]
    cols["m_jj"] = np.exp(rng.normal(0.0 + 0.05 * s, 0.25, n)) * (0.7 + 0.15 * lead)
    cols["m_jjj"] = np.exp(rng.normal(0.02 + 0.04 * s, 0.22, n)) * (0.8 + 0.1 * (lead + cols["jet3_pt"]))
    cols["m_lv"] = np.exp(rng.normal(0.0, 0.08 + 0.05 * (1 - s), n))
    cols["m_jlv"] = np.exp(rng.normal(0.0 + 0.08 * s, 0.3, n)) * (0.8 + 0.1 * cols["lepton_pt"])
    # the Higgs-like resonance: a narrow peak in m_bb for part of the signal
    peak = (s > 0) & (rng.random(n) < 0.6)
    cols["m_bb"] = np.where(peak, rng.normal(1.05, 0.12, n), np.exp(rng.normal(-0.05, 0.45, n)))
    cols["m_wbb"] = np.exp(rng.normal(0.0 + 0.06 * s, 0.25, n)) * (0.7 + 0.2 * np.abs(cols["m_bb"]))
    cols["m_wwbb"] = np.exp(rng.normal(0.0 + 0.07 * s, 0.22, n)) * (0.6 + 0.2 * cols["m_wbb"])
    X = np.empty((n, len(FEATURES)), dtype=np.float32)
    for k, name in enumerate(FEATURES):
        X[:, k] = cols[name]
    return X, y


# ------------------------------------------------------------------------------------------------
# PGCOPY binary format

_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = _SIGNATURE + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)


def _table_dtype(ncols):
    fields = [("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8")]
    for k in range(ncols):
        fields += [(f"len{k}", ">i4"), (f"f{k}", ">f4")]
    return np.dtype(fields)


_PRED_DTYPE = np.dtype([("nfields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("p_len", ">i4"), ("p", ">f8")])


class _ChunkReader(io.RawIOBase):
    """A read()-able stream over an iterator of bytes chunks (for cursor.copy_expert)."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._buf = b""

    def readable(self):
        return True

    def read(self, size=-1):
        while size < 0 or len(self._buf) < size:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out


def table_copy_stream(X, first_id=1, chunk_rows=50000):
    """PGCOPY binary of rows (id bigint, X[:, 0] real, ...) as a stream for COPY ... FROM STDIN."""
    n, ncols = X.shape
    dt = _table_dtype(ncols)

    def chunks():
        yield HEADER
        for lo in range(0, n, chunk_rows):
            hi = min(n, lo + chunk_rows)
            rec = np.empty(hi - lo, dtype=dt)
            rec["nfields"] = ncols + 1
            rec["id_len"] = 8
            rec["id"] = np.arange(first_id + lo, first_id + hi, dtype=np.int64)
            for k in range(ncols):
                rec[f"len{k}"] = 4
                rec[f"f{k}"] = X[lo:hi, k]
            yield rec.tobytes()
        yield TRAILER

    return _ChunkReader(chunks())


def parse_table_copy(buf, ncols):
    """(ids int64 [n], X float32 [n, ncols]) from COPY (SELECT id, c1, ..., cN ...) TO STDOUT (FORMAT binary).

    Expects no NULLs (every field present with its fixed length)."""
    mv = memoryview(buf)
    if bytes(mv[:len(_SIGNATURE)]) != _SIGNATURE:
        raise ValueError("not a PGCOPY stream")
    ext = struct.unpack(">i", mv[15:19])[0]
    start = 19 + ext
    end = len(mv) - 2
    dt = _table_dtype(ncols)
    if (end - start) % dt.itemsize:
        raise ValueError("PGCOPY rows are not fixed-width (NULLs?)")
    rec = np.frombuffer(mv[start:end], dtype=dt)
    X = np.empty((len(rec), ncols), dtype=np.float32)
    for k in range(ncols):
        X[:, k] = rec[f"f{k}"]
    return rec["id"].astype(np.int64), X


def predictions_copy_stream(ids, preds):
    """PGCOPY binary of rows (id bigint, prediction double precision)."""
    rec = np.empty(len(ids), dtype=_PRED_DTYPE)
    rec["nfields"] = 2
    rec["id_len"] = 8
    rec["id"] = ids
    rec["p_len"] = 8
    rec["p"] = preds
    return _ChunkReader([HEADER, rec.tobytes(), TRAILER])
