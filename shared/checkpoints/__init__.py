"""Checkpoints: writing and resuming our own, and reading everyone else's.

* :mod:`.io`: atomic writes, ``--resume PATH|auto``, loading a selfsup training checkpoint;
* :mod:`.reading`: loading files without running pickled code, fingerprints;
* :mod:`.format_base`, :mod:`.layouts`, :mod:`.detection`, :mod:`.formats`: the registry of original
  repositories' checkpoint layouts, naming a file's layout, and importing its backbone; files that hold only a
  linear classifier (``kind="head"``: the unofficial MoCo's ``test.py``, CMC's ``LinearProbing.py`` /
  ``eval_moco_ins.py``, SwAV's ``eval_linear.py``) give their head, and a clear error when asked for a backbone;
* :mod:`.backbone_layout`: reading a backbone's architecture off a state dict's shapes.

A new layout is one entry in ``layouts.FORMATS``; nothing here names a project's trainer.
"""
