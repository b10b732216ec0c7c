"""Train one linear-dense cell with the masked bound as the grid does (same seed, budget and one thread), then
compare the learned linear decoder with the PPCA ML fit: singular values of the stacked decoder, cosines of the
principal angles between the two column spaces, and the activity Var_x(E_q[z_d | x]) of each latent dimension.

    python docs/results/linear-dense/collapse/diagnose.py self_attention 1 500   # aggregator, seed, epochs

Writes ``<aggregator>_<seed>_<epochs>.json`` beside this file.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pimvae import evaluation as ev
from pimvae import experiments
from pimvae.evaluation.linear_gaussian import LinearGaussian, ppca_fit
from pimvae.experiments._loop import train
from pimvae.experiments.base import Row


def main(aggregator: str, seed: int, epochs: int) -> dict:
    torch.set_num_threads(1)
    exp = experiments.get("linear-dense")
    data = exp.data(seed, False)
    torch.manual_seed(seed)
    model = exp.model(Row(aggregator, "standard_normal"), data, False)
    t0 = time.perf_counter()
    train(model, exp.objective("masked", 1.0), data.train, exp.default.replace(epochs=epochs), seed=seed)
    wall = time.perf_counter() - t0
    ds, names = data.train, data.train.names
    w = torch.cat([LinearGaussian.from_model(model).W[n] for n in names]).double()
    w_ml = torch.cat([ppca_fit(ds, data.info["latent_dim"]).W[n] for n in names]).double()
    cos = torch.linalg.svdvals(torch.linalg.qr(w).Q.T @ torch.linalg.qr(w_ml).Q)
    out = {"aggregator": aggregator, "seed": seed, "epochs": epochs, "wall_s": round(wall, 1),
           "llh_gap": ev.llh_gap(data.info["ll_ml"], ev.exact_log_likelihood(model, ds)),
           "decoder_singular_values": np.round(np.sort(torch.linalg.svdvals(w).numpy()), 3).tolist(),
           "ml_singular_values": np.round(np.sort(torch.linalg.svdvals(w_ml).numpy()), 3).tolist(),
           "principal_cosines": np.round(np.sort(cos.numpy()), 4).tolist(),
           "latent_activity": np.round(np.sort(ev.latent_activity(model, ds).numpy()), 3).tolist(),
           "active_units": ev.active_units(model, ds)}
    (Path(__file__).parent / f"{aggregator}_{seed}_{epochs}.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
