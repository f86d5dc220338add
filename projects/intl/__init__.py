"""INTL (``winci-ai/INTL``) and its sibling CW-RGP (``winci-ai/CW-RGP``).

Weng et al., "Modulate Your Spectrum in Self-Supervised Learning" (ICLR 2024, arXiv:2305.16789) and Weng et al.,
"An Investigation into Whitening Loss for Self-supervised Learning" (NeurIPS 2022, arXiv:2210.03586).

* :mod:`.whitening` - IterNorm, the exact spectral power transform, CW-RGP's group ZCA (fp32);
* :mod:`.loss` - the objectives as the trainers run them: normalised MSE, trace loss and β, whitening over the
  global batch, the ``intl`` / ``intl_m`` / CW-RGP losses;
* :mod:`.model` - INTL's trunk + projector (+ EMA copies) and CW-RGP's encoder + head;
* :mod:`.schedules` - the per-step learning rates of both;
* :mod:`.transforms` - the training views of both;
* :mod:`.cli`, :mod:`.train` - ``intl-train`` on the shared trainer runtime (entries ``intl``, ``intl_m``);
* :mod:`.cwrgp_cli`, :mod:`.cwrgp_train` - ``cwrgp-train`` (entry ``cwrgp``, one process).
"""
