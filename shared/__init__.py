"""selfsup.shared: the core every project builds on (backbones, data, distributed, optimisation,
checkpoints, logging and the evaluation harness). It never imports a project."""

__version__ = "0.1.0"
