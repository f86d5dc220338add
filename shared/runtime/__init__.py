"""The training runtime every trainer shares: what happens around the model, not inside it.

* :mod:`.config`: common flags, the frozen resolved config, ``config.json``;
* :mod:`.seeding`: ``--seed`` for Python's ``random``, NumPy, torch and loader workers, and RNG capture/restore;
* :mod:`.cpu`: start-up CPU tuning (glibc malloc thresholds);
* :mod:`.precision`: ``--precision``, ``--channels_last``, ``--compile``;
* :mod:`.preemption`: SIGTERM/SIGUSR1 -> checkpoint -> clean exit;
* :mod:`.trainer`: the trainer runtime: a project supplies a method (layout, build, step, checkpoint entries,
  export) and :class:`~.trainer.TrainingRun` does start-up, the checkpoint schema, ``--resume``, DDP and the loop;
* :mod:`.registry`: the registry of trainers (the ``selfsup.trainers`` entry points) the contract test runs;
* :mod:`.loop`: the epoch loop every trainer runs (resumable position, logging windows, checkpoint triggers);
* :mod:`.logger`, :mod:`.plotting`: console, CSV, TensorBoard and PNG output;
* :mod:`.entrypoint`: console entry points that report bad input in one line (exit status 2).
"""
