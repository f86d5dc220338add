"""Networks and layers that more than one method uses.

* :mod:`.backbones`: torchvision-keyed ResNets (widths, CIFAR stem, per-stage outputs);
* :mod:`.alexnet`: the half-width AlexNet of one colour stream;
* :mod:`.split_batchnorm`: per-sub-batch BN, one device emulating ``nn.DataParallel``'s per-device BN.

Heads, queues, prototypes and other method state belong to the projects' models, not here.
"""
