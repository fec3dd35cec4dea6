"""A replication of the CIFAR-10 results of He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016).

Modules:
    models    the networks: basic/bottleneck blocks, shortcut options A/B/C, plain vs residual, CIFAR and
              ImageNet families
    data      CIFAR-10 from its official files, the 45k/5k split, batched augmentation on the device
    train     the recipe as a frozen config, the training loop, evaluation, checkpoints, run records, sweeps
    analysis  layer responses, confusion matrices, reading run records into tables
    plots     every figure, drawn from run records only
"""

__version__ = "0.1.0"
