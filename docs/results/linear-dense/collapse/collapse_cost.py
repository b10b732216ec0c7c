"""What k collapsed latent dimensions cost on linear-dense, from the data alone (no training).

With the noise fixed at σ_ML, a linear-Gaussian model that spans all but k of the PPCA fit's D directions loses,
per data point, ½ Σ (λ_i/σ² − 1 − log(λ_i/σ²)) over the dropped directions (λ_i: sample-covariance eigenvalues);
the cheapest k to lose are the weakest. As an LLH gap that is this cost over |ℓ_ML|. A collapsed dimension also
drops out of the MCC: (D − k)/D times the true posterior's own MCC (one draw, or its mean).

    python docs/results/linear-dense/collapse/collapse_cost.py --seeds 1 2
"""

import argparse

import torch

from pimvae import experiments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--max-k", type=int, default=3)
    args = parser.parse_args()
    exp = experiments.get("linear-dense")
    print("| seed | k collapsed | LLH gap | MCC, one draw | MCC, posterior mean |")
    print("|---:|---:|---:|---:|---:|")
    for seed in args.seeds:
        data = exp.data(seed, False)
        d = data.info["latent_dim"]
        x = torch.cat([data.train.data[n] for n in data.train.names], 1).double()
        xc = x - x.mean(0)
        lam = torch.linalg.eigvalsh(xc.T @ xc / len(x)).flip(0)
        ratio = lam[:d] / lam[d:].mean()
        cost = (0.5 * (ratio - 1 - torch.log(ratio))).sort().values
        ll_ml = abs(float(data.info["ll_ml"].mean()))  # per point
        for k in range(args.max_k + 1):
            print(f"| {seed} | {k} | {float(cost[:k].sum()) / ll_ml:.5f} | "
                  f"{(d - k) / d * data.info['mcc_truth_sample']:.3f} | {(d - k) / d * data.info['mcc_truth']:.3f} |")


if __name__ == "__main__":
    main()
