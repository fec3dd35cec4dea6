#!/usr/bin/env python3
"""The confusion matrix of a trained network on the CIFAR-10 test set, and its per-class accuracy.

By default the tutorial recipe's ResNet-20 (Adam, 45k/5k split, early stopping on the validation error;
the reported model is the validation-chosen one). `--arch resnet56 --recipe paper` gives the paper
recipe's ResNet-56 (the degradation experiment's run, if it has finished). Rows are the true classes.

    python experiments/confusion.py --quick
    python experiments/confusion.py --arch resnet56 --recipe paper
"""

from __future__ import annotations

import make_figures
from resnet import analysis, cli, models
from resnet import train as engine


def main() -> int:
    parser = cli.experiment_parser(__doc__)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--recipe", default="tutorial", choices=tuple(engine.RECIPES))
    args = parser.parse_args()
    if args.arch not in models.ARCHS:
        raise engine.ConfigError(f"unknown --arch {args.arch!r}; choose one of {', '.join(models.ARCHS)}")
    jobs = cli.sweep_jobs([engine.RECIPES[args.recipe](args.arch)], args)
    data = engine.load_data(args.data_dir, download=args.download)  # checked before any run starts
    cli.run_jobs(jobs, args, data=data)
    root = cli.results_root(args)
    for job, summary, model, state in cli.trained_runs(jobs, purpose="no confusion matrix"):
        n = job.config.test_subset or len(data.test_labels)
        images, labels = data.test_images[:n], data.test_labels[:n]
        preds = analysis.predict(model, images, mean=state["mean"], std=state["std"])
        matrix = analysis.confusion(labels, preds, num_classes=len(data.classes))
        record = {
            "run": job.out.name, "arch": job.config.arch, "recipe": job.config.recipe, "seed": job.config.seed,
            "selection": summary["selection"], "classes": list(data.classes), "matrix": matrix.tolist(),
            "per_class_accuracy": dict(zip(data.classes, analysis.per_class_accuracy(matrix).round(4).tolist())),
            "test_error": float((preds != labels).float().mean()), "test_images": n,
            "summary_test_error": summary["final_test_error"], "schedule": engine.describe_schedule(job.config),
            "data": summary["data"], "data_fingerprint": data.fingerprint, "git_commit": engine.git_commit(),
        }
        engine.write_json(root / "confusion" / f"{job.out.name}.json", record)
        print(f"{job.out.name}: test error {record['test_error']:.2%}; per-class accuracy:")
        for name, acc in record["per_class_accuracy"].items():
            print(f"  {name:>10s}  {acc:.1%}")
    make_figures.build(root, only=("confusion",))
    return 0


if __name__ == "__main__":
    cli.main_guard(main)
