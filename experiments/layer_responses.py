#!/usr/bin/env python3
"""Figure 7: the standard deviation of every 3x3 layer's responses (after BN, before the addition and ReLU).

For plain-20/56 and ResNet-20/56 (and ResNet-110 with --with-110), the degradation experiment's networks
(trained here first if their runs have not finished), on the test set. ResNets' responses are generally
smaller than plain nets', and deeper ResNets' smaller still: the residual functions are closer to zero.

    python experiments/layer_responses.py --quick
    python experiments/layer_responses.py --with-110
"""

from __future__ import annotations

import make_figures
from resnet import analysis, cli
from resnet import train as engine

ARCHS = ("plain20", "plain56", "resnet20", "resnet56")


def main() -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--with-110", action="store_true", help="also ResNet-110 (with its warm-up)")
    args = parser.parse_args()
    archs = ARCHS + (("resnet110",) if args.with_110 else ())
    if args.seeds != 1:
        print("layer_responses: one network per depth (seed 0), as in the paper's Figure 7; --seeds ignored")
        args.seeds = 1
    jobs = cli.sweep_jobs([engine.paper_config(a) for a in archs], args)
    data = engine.load_data(args.data_dir, download=args.download)  # checked before any run starts
    cli.run_jobs(jobs, args, data=data)
    records = []
    for job, summary, model, state in cli.trained_runs(jobs, purpose="left out of Figure 7"):
        n = job.config.test_subset or len(data.test_labels)
        stds = analysis.layer_response_std(model, data.test_images[:n], mean=state["mean"], std=state["std"])
        records.append(analysis.responses_record(stds, run_dir=job.out, summary=summary)
                       | {"test_images": n, "schedule": engine.describe_schedule(job.config)})
        print(f"{job.out.name}: {len(stds)} layers, mean std {stds.mean():.3f}")
    root = cli.results_root(args)
    engine.write_json(root / "layer_responses.json", {"runs": records, "git_commit": engine.git_commit()})
    make_figures.build(root, only=("layer_responses",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
