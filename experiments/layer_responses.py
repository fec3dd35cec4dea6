#!/usr/bin/env python3
"""Figure 7: the standard deviation of every 3x3 layer's responses (after BN, before the addition and ReLU).

For plain-20/56 and ResNet-20/56 (and ResNet-110 with --with-110), the degradation experiment's networks
(trained here first if their runs have not finished), on the test set. ResNets' responses are generally
smaller than plain nets', and deeper ResNets' smaller still: the residual functions are closer to zero.

    python experiments/layer_responses.py --quick
    python experiments/layer_responses.py --with-110
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import analysis, cli, results  # noqa: E402
from resnet.config import ConfigError, paper_config  # noqa: E402
from resnet.records import code_version, write_json  # noqa: E402
from resnet.cifar10 import load_data  # noqa: E402

ARCHS = ("plain20", "plain56", "resnet20", "resnet56")


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--with-110", action="store_true", help="also ResNet-110 (with its warm-up)")
    args = parser.parse_args(argv)
    if args.seeds != 1:
        raise ConfigError("Figure 7 shows one network per depth (seed 0), as the paper's; leave --seeds out")
    archs = ARCHS + (("resnet110",) if args.with_110 else ())
    jobs = cli.sweep_jobs([paper_config(a) for a in archs], args)
    data = load_data(args.data_dir, download=args.download)  # checked before any run starts
    cli.run_jobs(jobs, args, data=data)
    records = []
    for job, model, norm in cli.finished_networks(jobs, purpose="left out of Figure 7"):
        records.append(analysis.responses_record(model, norm, data, folder=job.folder))
        print(f"{job.out.name}: {len(records[-1]['stds'])} layers, mean std "
              f"{sum(records[-1]['stds']) / len(records[-1]['stds']):.3f}")
    root = cli.results_root(args)
    write_json(root / "layer_responses.json", {"runs": records, **code_version()})
    results.build(root, only=("layer_responses",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
