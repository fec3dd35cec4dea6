"""A replication of the CIFAR-10 results of He et al., "Deep Residual Learning for Image Recognition"
(CVPR 2016).

Modules, each using only those above it:
    models      the paper's CIFAR-10 networks: blocks, shortcut options A/B/C, plain vs residual
    imagenet    the ImageNet family (Table 1), equal to torchvision's
    cifar10     CIFAR-10 on disk: both official layouts, verified by the official SHA-1s, the 45k/5k split
    config      the recipe (RunConfig, Recipe), the schedules, the learning rate, early stopping's rule;
                how runs execute (Execution, Deadline)
    distributed data parallelism with torchrun
    loader      the training batches on the device (crop, flip, normalisation; a group's in one gather),
                and what a run trains on (DeviceData)
    records     a run's folder (RunFolder) and a planned run (Job): config, log, summary, checkpoint,
                model, lock, code version
    inference   the one path from images to outputs (evaluation, confusion, layer responses)
    state       a run's state, which is its checkpoint (RunState)
    step        one training iteration (eager, or captured in a CUDA graph)
    train       a run that a driver opens, advances and ends (Run), and the loop (train)
    group       the runs of one depth (any seed and shortcut) trained as one grouped network (GroupRun)
    plan        what a time-limited sweep opens next: units that can finish, by a measured cost table
    sweep       many runs: in turn on one GPU, a share per GPU, processes on the CPU; a time limit
    transfer    packing runs to move them between machines, and unpacking them
    pretrained  published weights: publish, load by name, load any weights file
    analysis    confusion matrices and layer responses of trained networks
    plots       every figure, drawn from records only
    results     the paper's tables and figure inputs as functions of the records; make figures
    cli         what the command-line scripts share: flags, the plan's jobs, clear failures
    notebook    the set-up every notebook starts with
"""

__version__ = "0.1.0"
