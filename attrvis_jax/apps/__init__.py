"""The drivers: what runs the method for a person or a study (CLI, one-photo pipeline, sweeps and their
store, image sources, the perturbation ablation, figures, HTML report, JAX's compilation cache). They
import the library; the library (models, weights, attribution, render, metrics, groups) never imports
them."""
