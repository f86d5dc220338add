"""Networks and layers that more than one method uses.

* :mod:`.backbones`: torchvision-keyed ResNets (widths, stem width, CIFAR stem, per-stage outputs);
* :mod:`.alexnet`: the half-width AlexNet of one colour stream;
* :mod:`.two_stream`: CMC's two-stream encoder (one backbone per channel group, features concatenated);
* :mod:`.split_batchnorm`: per-sub-batch BN, one device emulating ``nn.DataParallel``'s per-device BN;
* :mod:`.memory_bank`: per-instance feature memory with alias-method negative sampling and momentum updates,
  kept identical across ranks (the one piece of method state that several projects share).

Heads, queues, prototypes and other method state belong to the projects' models, not here.
"""
