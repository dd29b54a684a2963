"""Scatter plots of latent means, rendered with matplotlib to PNG bytes (no display needed)."""
import io
from typing import Optional, Sequence

import numpy as np

from vae_dist.model import latent_paths


def project(latents) -> tuple:
  """[N, L] latents -> ([N, 2] points, (x label, y label)) for a scatter plot.

  L = 2 is drawn as it is, L = 1 against a small deterministic jitter (so overlapping points stay
  visible), L > 2 on its first two principal components.
  """
  z = np.asarray(latents, np.float32)
  dim = z.shape[1]
  if dim == 2:
    return z, ("z[0]", "z[1]")
  if dim == 1:
    jitter = np.random.default_rng(0).uniform(-0.4, 0.4, size=len(z)).astype(np.float32)
    return np.stack([z[:, 0], jitter], axis=1), ("z[0]", "jitter")
  points, frac = latent_paths.pca_2d(z)
  return points, (f"PC 1 ({100 * frac[0]:.0f}% of variance)",
                  f"PC 2 ({100 * frac[1]:.0f}% of variance)")


def scatter_png(latents, values: Optional[np.ndarray], class_names: Optional[Sequence[str]], *,
                title: str, legend_title: str = "label", size_inches: float = 6.0,
                dpi: int = 100) -> bytes:
  """A square scatter plot of latent means coloured by class, as PNG bytes.

  Args:
    latents: [N, L] latent means.
    values: [N] integer classes (label or attribute values), or None for one colour.
    class_names: names of the classes (index = value), or None to show the values.
    title: the plot's title.
    legend_title: what the colours are.
    size_inches: width and height of the figure.
    dpi: pixels per inch: the PNG is round(size_inches * dpi) pixels square.

  Returns:
    PNG bytes.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top  # Slow; only plots need it.
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  points, (xlabel, ylabel) = project(latents)
  fig, ax = plt.subplots(figsize=(size_inches, size_inches), dpi=dpi)
  try:
    if values is None or np.all(np.asarray(values) < 0):
      ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    else:
      values = np.asarray(values)
      classes = np.unique(values)
      cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else
                          "viridis")
      for i, c in enumerate(classes):
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        colour = cmap(i % cmap.N if len(classes) <= 20 else i / max(1, len(classes) - 1))
        sel = values == c
        ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=colour, label=name)
      if len(classes) <= 20:
        ax.legend(title=legend_title, fontsize="small", markerscale=2, loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    # No bbox_inches='tight': the PNG keeps exactly the figure's size in pixels.
    fig.savefig(buffer, format="png", dpi=dpi)
  finally:
    plt.close(fig)
  return buffer.getvalue()
