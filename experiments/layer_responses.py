#!/usr/bin/env python3
"""Figure 7: the standard deviation of every 3x3 layer's responses (after BN, before the addition and ReLU).

For plain-20/56 and ResNet-20/56 (and ResNet-110 with --with-110), the degradation experiment's networks
(trained here first if their runs have not finished; --no-train: forward passes only, the networks whose
runs have finished), on the test set. A finished run's weights are its model.pt or, where the repository
holds only its records, its published file (results/weights/). ResNets' responses are generally smaller
than plain nets', and deeper ResNets' smaller still: the residual functions are closer to zero.

    python experiments/layer_responses.py --quick
    python experiments/layer_responses.py --with-110
    python experiments/layer_responses.py --with-110 --no-train   # the published full-schedule networks
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a copied tree, nothing installed

from resnet import analysis, cli, results  # noqa: E402
from resnet.config import ConfigError, paper_config  # noqa: E402
from resnet.records import code_version, read_json, write_json  # noqa: E402
from resnet.cifar10 import load_data  # noqa: E402

ARCHS = ("plain20", "plain56", "resnet20", "resnet56")


def main(argv: list[str] | None = None) -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--with-110", action="store_true", help="also ResNet-110 (with its warm-up)")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: measure the networks whose runs have finished, name the others")
    args = parser.parse_args(argv)
    if args.seeds != 1:
        raise ConfigError("Figure 7 shows one network per depth (seed 0), as the paper's; leave --seeds out")
    archs = ARCHS + (("resnet110",) if args.with_110 else ())
    jobs = cli.sweep_jobs([paper_config(a) for a in archs], args)
    data = load_data(args.data_dir, download=args.download)  # checked before any run starts
    if not args.no_train:
        cli.run_jobs(jobs, args, data=data)
    root = cli.results_root(args)
    path = root / "layer_responses.json"
    before = {r["run"]: r for r in read_json(path)["runs"]} if path.is_file() else {}
    records = []
    for job, model, norm, weights in analysis.trained_networks(jobs, purpose="left out of Figure 7"):
        if analysis.keeps(before.get(job.out.name), job.folder, weights):
            records.append(before[job.out.name])
            print(f"{job.out.name}: its responses, measured on the run's model.pt, are kept")
            continue
        records.append(analysis.responses_record(model, norm, data, folder=job.folder, weights=weights))
        print(f"{job.out.name}: {len(records[-1]['stds'])} layers, mean std "
              f"{sum(records[-1]['stds']) / len(records[-1]['stds']):.3f}")
    if not records:
        print("no finished network to measure: layer_responses.json is left as it is")
        return 0
    write_json(path, {"runs": records, **code_version()})
    results.build(root, only=("layer_responses",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
