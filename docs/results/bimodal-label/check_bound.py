"""Does the frozen masked bound exceed log p(x, label), or is the 64-particle estimate biased low?
Retrain one run of docs/results/bimodal-label (SelfAttention, N(0, I), masked, seed 1: bound − LLH_64 = +2.0) and
estimate the log-likelihood with 64, 1024 and 8192 particles."""
import json, sys, torch
torch.set_num_threads(1)
from pimvae import evaluation as ev
from pimvae.experiments import get
from pimvae.experiments.base import Row
from pimvae.experiments._loop import train
agg, prior, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
exp = get("bimodal-label")
data = exp.data(seed, False)
torch.manual_seed(seed)
model = exp.model(Row(agg, prior), data, False)
objective = exp.objective("masked", 1.0)
log = train(model, objective, data.train, exp.default, seed=seed)
out = {"run": [agg, prior, "masked", seed], "steps": log.steps}
out["bound"] = float(ev.evaluate_bound(model, data.test, objective, num_draws=10, seed=seed)["bound"].mean())
for k in (64, 1024, 8192):
    out[f"llh_{k}"] = float(ev.log_likelihood(model, data.test, num_particles=k, seed=seed).mean())
print(json.dumps(out))
