#!/usr/bin/env python3
"""Reference PR values of the next-token law for tests/tests/next_token_law.rs.

Independent of Strata's analysis code: it reads the hidden states that `strata capture` wrote
for the tiny Llama fixture (whose hidden states are themselves checked against Hugging Face by
the parity tests), applies the reference code's normalisation, and fits every layer with
scikit-learn's LinearRegression exactly as HornHehhf/LLM-ELL's `Regression_measure` does
(PR = mean_squared_error / np.var), in float64. The law is fitted with scipy.stats.

Regenerate (needs numpy, scipy, scikit-learn):

    cargo run -p strata-cli -- capture "$STRATA_FIXTURES/tiny/llama" \
        --tokenizer tests/assets/byte-tokenizer.json \
        --file tests/assets/next-token-law/texts.txt \
        --capture embed,resid_post,final_norm --out /tmp/ntl-features.safetensors
    python3 tests/assets/next-token-law/make_expected.py /tmp/ntl-features.safetensors \
        > tests/assets/next-token-law/expected.json
"""

import json
import struct
import sys

import numpy as np
import scipy.stats
import sklearn
from sklearn.linear_model import LinearRegression

EPS = 1e-5  # tiny/llama config.json rms_norm_eps
N_LAYERS = 3


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"])
    return out


def fresh_rms_norm(x):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS)


def standardize(x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / x.std(-1, keepdims=True)


def main():
    t = read_safetensors(sys.argv[1])
    ids, lengths = t["input_ids"], t["lengths"]
    hf = ["embed", "resid_post.0", "resid_post.1", "final_norm"]
    blocks = ["embed", "resid_post.0", "resid_post.1", "resid_post.2"]
    cases = [
        # (name, sites, normalize, token offset, one-hot)
        ("fresh-norm/next", hf, "fresh-norm", 1, False),
        ("standardize/next", hf, "standardize", 1, False),
        ("none/next", hf, "none", 1, False),
        ("fresh-norm/previous", hf, "fresh-norm", -1, False),
        ("fresh-norm/current", hf, "fresh-norm", 0, False),
        ("fresh-norm/next-next", hf, "fresh-norm", 2, False),
        ("fresh-norm/next/onehot", hf, "fresh-norm", 1, True),
        ("fresh-norm/next/blocks", blocks, "fresh-norm", 1, False),
    ]
    expected = {
        "versions": {
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "cases": {},
    }
    for name, sites, normalize, offset, onehot in cases:
        prs = []
        for k, site in enumerate(sites):
            xs, ys = [], []
            for b, n in enumerate(lengths):
                n = int(n)
                h = t[site][b, :n].astype(np.float64)
                # The last hf-compatible entry already carries the trained final norm.
                if not (sites is hf and k == len(sites) - 1):
                    if normalize == "fresh-norm":
                        h = fresh_rms_norm(h)
                    elif normalize == "standardize":
                        h = standardize(h)
                for j in range(n):
                    if 0 <= j + offset < n:
                        xs.append(h[j])
                        ys.append(ids[b, j + offset])
            X = np.array(xs)
            y = np.array(ys, dtype=np.float64)
            if onehot:
                classes = np.unique(y)
                Y = (y[:, None] == classes[None, :]).astype(np.float64)
                pred = LinearRegression().fit(X, Y).predict(X)
                pr = ((Y - pred) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum()
            else:
                pred = LinearRegression().fit(X, y).predict(X)
                pr = np.mean((y - pred) ** 2) / np.var(y)
            prs.append(float(pr))
        x = np.arange(len(prs) - 1, dtype=np.float64)
        logs = np.log10(prs[1:])
        fit = scipy.stats.linregress(x, logs)
        r = scipy.stats.pearsonr(x, logs)
        expected["cases"][name] = {
            "n": len(ys),
            "pr": prs,
            "slope": float(fit.slope),
            "intercept": float(fit.intercept),
            "pearson_r": float(r.statistic),
            "pearson_p": float(r.pvalue),
        }
    json.dump(expected, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
