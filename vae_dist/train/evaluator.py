"""The exact ELBO over an eval split, as Orbit keeps it: apart from the trainer.

Exact: every example of the split is seen once (the input pipeline pads the last batches and
marks the padding with mask 0), and each example's latent noise is fixed by its index, so the
number does not depend on the batch size, the replica count or the run's step.
"""
import numpy as np
import tensorflow as tf

from vae_dist.model import networks
from vae_dist.model import objective
from vae_dist.train import replica_vars


class Evaluator:
  """The eval loop for one model and strategy.

  Args (keyword-only):
    strategy: the tf.distribute strategy the model was created under.
    model: the VAE to evaluate.
    likelihood: p(x|z) of the run (objective.Likelihood.from_config).
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: networks.VAE,
               likelihood: objective.Likelihood):
    self.strategy = strategy
    self.model = model
    self.likelihood = likelihood
    with strategy.scope():
      self.sums = replica_vars.MetricSums({
          "recon": [], "kl": [], "elbo": [], "examples": [], "kl_per_dim": [model.latent_dim]})
    self.eval_loop = tf.function(self._eval_loop)

  def _replica_eval(self, batch):
    terms = objective.elbo_terms(
        self.model, batch["image"], batch["eps"], training=False, likelihood=self.likelihood)
    mask = batch["mask"]
    self.sums.add({
        "recon": tf.reduce_sum(terms["recon"] * mask),
        "kl": tf.reduce_sum(terms["kl"] * mask),
        "elbo": tf.reduce_sum(terms["elbo"] * mask),
        "examples": tf.reduce_sum(mask),
        "kl_per_dim": tf.reduce_sum(terms["kl_per_dim"] * mask[:, None], axis=0),
    })

  def _eval_loop(self, iterator, num_steps):
    for _ in tf.range(num_steps):
      self.strategy.run(self._replica_eval, args=(next(iterator),))

  def evaluate(self, dist_dataset, num_steps: int) -> tuple[dict, np.ndarray]:
    """Runs num_steps eval batches of dist_dataset (the whole split, see eval_dataset_fn).

    Returns:
      The metrics ('eval/elbo', 'eval/recon', 'eval/kl' in nats per image, 'eval/bits_per_dim',
      'eval/examples', 'eval/active_units') and the mean KL of each latent dimension.
    """
    self.sums.reset()
    self.eval_loop(iter(dist_dataset), tf.constant(num_steps, tf.int32))
    s = self.sums.read()
    n = max(float(s["examples"]), 1.0)
    kl_dims = s["kl_per_dim"] / n
    metrics = {
        "eval/elbo": float(s["elbo"]) / n,
        "eval/recon": float(s["recon"]) / n,
        "eval/kl": float(s["kl"]) / n,
        "eval/bits_per_dim": float(self.likelihood.bits_per_dim(float(s["elbo"]) / n)),
        "eval/examples": float(s["examples"]),
        "eval/active_units": float((kl_dims > 0.01).sum()),
    }
    return metrics, kl_dims
