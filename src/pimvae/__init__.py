"""pimvae — multi-modal VAEs with masked variational bounds and permutation-invariant aggregation.

Declare modalities, pick an aggregator, a prior and an objective; any combination works::

    model = pimvae.MultimodalVAE(modalities, pimvae.aggregators.SumPooling(E, D), pimvae.priors.StandardNormal(D))
    out = pimvae.objectives.MaskedBound()(model, pimvae.Batch(data, present))
    out.loss.backward()
"""

from . import aggregators, distributions, likelihoods, objectives, priors, private
from .modality import Modality
from .model import Batch, Embedding, MultimodalVAE
from .objectives import LossOutput
from .private import (IndependentPrivate, PrivatePosterior, PrivatePrior, SelfAttentionPrivate, SumPoolingPrivate,
                      WithPrivate)

__version__ = "0.1.0"

__all__ = ["Modality", "MultimodalVAE", "Batch", "Embedding", "LossOutput", "aggregators", "likelihoods",
           "objectives", "priors", "distributions", "private", "WithPrivate", "PrivatePrior", "PrivatePosterior",
           "IndependentPrivate", "SumPoolingPrivate", "SelfAttentionPrivate", "__version__"]
