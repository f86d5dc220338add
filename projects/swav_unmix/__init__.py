"""SwAV with Un-Mix image mixtures (``szq0214/Un-Mix`` ``UnMix_SwAV``, on ``facebookresearch/swav``).

Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (NeurIPS 2020,
arXiv:2006.09882) and Shen et al., "Un-Mix: Rethinking Image Mixtures for Unsupervised Visual Representation
Learning" (AAAI 2022, arXiv:2003.05438).

* :mod:`.cli` - ``main_swav_unmix.py``'s flags and defaults;
* :mod:`.model` - ResNet trunk, projection head, L2-normalised embedding, prototypes, grouped multi-crop forward;
* :mod:`.queue` - the per-rank queue of embeddings;
* :mod:`.sinkhorn` - distributed Sinkhorn-Knopp (fp32);
* :mod:`.loss` - the objectives: SwAV's swapped prediction and Un-Mix's three-term loss;
* :mod:`.unmix` - the Un-Mix crop mixtures and the chained λ;
* :mod:`.transforms` - the multi-crop views; :mod:`.schedules` - the per-iteration warm-up + cosine rate;
* :mod:`.train` - ``swav-unmix-train`` on the shared trainer runtime (registered as ``swav`` and ``unmix``);
  :mod:`.demo` - ``selfsup-demo --method swav|unmix``;
* :mod:`.eval_linear`, :mod:`.eval_semisup` - the original evaluation command lines on the shared harness.
"""
