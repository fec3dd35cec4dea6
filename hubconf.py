"""torch.hub entry points for a clone of this repository:

    model = torch.hub.load("path/to/clone", "resnet56", source="local", pretrained=True)
    logits = model(model.normalization(images))            # images: uint8 [N, 3, 32, 32]

``pretrained=True`` loads the published weights of the full-schedule run (resnet.pretrained.load: seed 0,
option A, the paper's recipe unless ``recipe=``/``shortcut=``/``seed=`` say otherwise) and attaches the
normalisation the network was trained with as ``model.normalization``; ``pretrained=False`` returns a
freshly initialised network (resnet.models.build_model).
"""

from resnet import models as _models
from resnet import pretrained as _pretrained

dependencies = ["torch", "numpy"]


def _entry(arch: str):
    def entry(pretrained: bool = False, *, shortcut: str = "A", recipe: str = "paper", seed: int = 0,
              device: str = "cpu"):
        if not pretrained:
            return _models.build_model(arch, shortcut=shortcut).to(device)
        model, normalization = _pretrained.load(arch, shortcut=shortcut, recipe=recipe, seed=seed,
                                                device=device)
        model.normalization = normalization
        return model

    entry.__name__ = arch
    entry.__doc__ = (f"{arch} for CIFAR-10 (He et al. 2016, section 4.2); "
                     "pretrained=True: the published weights.")
    return entry


resnet20 = _entry("resnet20")
resnet32 = _entry("resnet32")
resnet44 = _entry("resnet44")
resnet56 = _entry("resnet56")
resnet110 = _entry("resnet110")
plain20 = _entry("plain20")
plain32 = _entry("plain32")
plain44 = _entry("plain44")
plain56 = _entry("plain56")
