"""jaxapex: verifiable personalized machine unlearning (Group OBS in JAX, proven with Halo2)."""

__version__ = "0.1.0"
