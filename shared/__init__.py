"""selfsup.shared: the core every project builds on. It never imports a project or names a method.

Sub-packages, one concern each:

* :mod:`.models`: backbones and shared layers;
* :mod:`.data`: datasets, augmentations, resumable and seeded loading;
* :mod:`.distributed`: process groups, collectives, BN across ranks;
* :mod:`.optim`: optimisers and learning-rate schedules;
* :mod:`.checkpoints`: atomic saves, resume, and reading every original repository's checkpoints;
* :mod:`.runtime`: flags and run config, seeding, CPU tuning, precision, pre-emption, logging and plots;
* :mod:`.evaluation`: the linear, semi-supervised and kNN protocols and ``selfsup-eval``.
"""

__version__ = "0.1.0"
