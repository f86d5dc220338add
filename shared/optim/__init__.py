"""Optimisation: optimisers and learning-rate schedules.

* :mod:`.optimizers`: SGD (fused where the device allows), LARS/LARC, AdamW, parameter groups without decay;
* :mod:`.schedules`: step, cosine and warm-up schedules as pure functions plus one frozen description.
"""
