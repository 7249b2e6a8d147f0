"""``fastconv experiment``: two of the seed's claims about ConvNets, measured on Fashion-MNIST.

``params``
    Fully connected networks need far more parameters than a ConvNet for the same accuracy
    (the seed: about 40x). Trains a family of ConvNets and a family of fully connected networks
    (MLPs) of growing width on the same data for the same epochs, and for each MLP finds the
    smallest ConvNet that is at least as accurate on the test set.
``relu-vs-tanh``
    ReLU networks train several times faster than tanh ones (Krizhevsky et al. 2012: a
    four-layer ConvNet reached 25% training error on CIFAR-10 six times faster with ReLU).
    Trains the same ConvNet with each activation and records the training error (on a fixed
    sample of training images) several times per epoch, and the epochs and seconds each needs to
    reach 25% (and lower) training error.

Each writes a Markdown report and a PNG figure (with matplotlib) to ``--output-dir`` (``docs/``).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import fastconv
from fastconv import _io, init, nn, optim
from fastconv._progress import progress_bar
from fastconv.train import (
    add_data_arguments,
    check_outputs,
    convnet,
    count_parameters,
    data_source,
    decay_factor,
    evaluate,
    fit,
    load_data,
    mlp,
    percentage,
    positive_int,
    positive_number,
    train_step,
)

__all__ = ["add_arguments", "run", "params_experiment", "relu_vs_tanh_experiment"]

# (conv channels, hidden width) of the ConvNets and hidden widths of the MLPs compared by `params`
CONVNETS = [((4, 8), 32), ((8, 16), 64), ((16, 32), 128), ((32, 64), 128)]
MLPS = [(64,), (256,), (1024,), (1024, 1024)]


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _setup(args) -> tuple[tuple, tuple, str]:
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    folder, data = data_source(args.data, args.dataset, args.progress)
    print(f"data: {data}")
    train, test = load_data(folder, args.limit, args.test_limit,
                            np.random.default_rng(args.seed))
    return train, test, data


def _provenance(args, data: str, train, test) -> str:
    command = "fastconv " + " ".join(shlex.quote(a) for a in args.argv)
    return (f"Command: `{command}`  \n"
            f"Data: {data}: {len(train[0]):,} training and {len(test[0]):,} test images.  \n"
            f"Machine: {platform.machine()}, {fastconv.get_num_threads()} thread(s), "
            f"fastconv {fastconv.__version__} with {fastconv.selected_isa()} kernels, "
            f"Python {platform.python_version()}, NumPy {np.__version__}.")


# ---- params --------------------------------------------------------------------------------------

@dataclass
class Trained:
    name: str
    family: str
    parameters: int
    test_accuracy: float
    seconds: float


def _train_one(name, family, model, train, test, args) -> Trained:
    print(f"\n{name}: {count_parameters(model):,} parameters")
    history = fit(model, optim.Adam(model.parameters(), lr=args.lr), train, test, args.epochs,
                  args.batch_size, np.random.default_rng(args.seed), args.lr_decay,
                  progress=args.progress)
    return Trained(name, family, count_parameters(model), history.epochs[-1].test_accuracy,
                   sum(history.column("seconds")))


def params_experiment(args) -> str:
    """Train ``CONVNETS`` and ``MLPS``; write params.md and params.png; return the report."""
    train, test, data = _setup(args)
    results = []
    for channels, hidden in CONVNETS:
        init.manual_seed(args.seed)
        name = f"ConvNet conv{channels[0]}-conv{channels[1]}-fc{hidden}"
        results.append(_train_one(name, "ConvNet", convnet(channels, hidden=hidden), train, test,
                                  args))
    for hidden in MLPS:
        init.manual_seed(args.seed)
        name = "MLP " + "-".join(f"fc{h}" for h in hidden)
        results.append(_train_one(name, "MLP", mlp(hidden), train, test, args))
    return write_params_report(results, args, _provenance(args, data, train, test),
                               len(train[0]))


def convnet_parameters_for(accuracy: float, convs: list[Trained]) -> float | None:
    """Parameters a ConvNet of the family ``convs`` needs for ``accuracy``: interpolated
    linearly in log(parameters) between the two trained sizes whose accuracies bracket it;
    None outside their range."""
    convs = sorted(convs, key=lambda r: r.parameters)
    for small, large in zip(convs, convs[1:]):
        if small.test_accuracy <= accuracy <= large.test_accuracy:
            if large.test_accuracy == small.test_accuracy:
                return float(small.parameters)
            t = (accuracy - small.test_accuracy) / (large.test_accuracy - small.test_accuracy)
            return float(np.exp(np.log(small.parameters)
                                + t * np.log(large.parameters / small.parameters)))
    return None


def write_params_report(results: list[Trained], args, provenance: str, n_train: int) -> str:
    """params.md (and params.png with matplotlib) in ``args.output_dir`` from the trained
    networks."""
    convs = sorted((r for r in results if r.family == "ConvNet"), key=lambda r: r.parameters)
    mlps = [r for r in results if r.family == "MLP"]
    lines = ["# Parameters: ConvNet against fully connected networks", "",
             "The seed claims that a fully connected network needs about 40x more parameters "
             "than a ConvNet for comparable accuracy. Here both families are trained on the "
             f"same Fashion-MNIST images for {args.epochs} epoch(s) with the recipe of "
             f"`fastconv train` (Adam, lr {args.lr:g} times {args.lr_decay:g} after each epoch, "
             f"batches of {args.batch_size}), ReLU everywhere, same seed. Accuracy is on the "
             "test set after the last epoch.", "",
             provenance, "",
             "| network | parameters | test accuracy | training time |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.parameters:,} | {r.test_accuracy:.2%} | {r.seconds:.0f} s |"
              for r in results]
    lines += ["", "## Parameters for the same accuracy", "",
              "For each fully connected network: the smallest ConvNet above that is at least as "
              "accurate, and the size a ConvNet of this family would need for exactly the same "
              "accuracy, interpolated linearly in log(parameters) between the two ConvNets "
              "whose accuracies bracket it.", "",
              "| fully connected | accuracy | smallest ConvNet as accurate | ratio | "
              "ConvNet size for the same accuracy (interpolated) | ratio |",
              "|---|---:|---|---:|---:|---:|"]
    ratios = []
    for m in mlps:
        match = next((c for c in convs if c.test_accuracy >= m.test_accuracy), None)
        cells = ["none", ""] if match is None else [
            f"{match.name} ({match.parameters:,}, {match.test_accuracy:.2%})",
            f"{m.parameters / match.parameters:.1f}x"]
        needed = convnet_parameters_for(m.test_accuracy, convs)
        if needed is None:
            cells += ["outside the ConvNets' range", ""]
        else:
            ratios.append((m, needed))
            cells += [f"{needed:,.0f}", f"{m.parameters / needed:.1f}x"]
        lines.append(f"| {m.name} ({m.parameters:,}) | {m.test_accuracy:.2%} | "
                     + " | ".join(cells) + " |")
    best_mlp = max(mlps, key=lambda r: r.test_accuracy)
    best_conv = max(convs, key=lambda r: r.test_accuracy)
    lines += ["", "## Result", ""]
    summary = (f"The best fully connected network ({best_mlp.name}, {best_mlp.parameters:,} "
               f"parameters) reaches {best_mlp.test_accuracy:.2%}; the best ConvNet "
               f"({best_conv.name}, {best_conv.parameters:,} parameters, "
               f"{best_conv.parameters / best_mlp.parameters:.2f}x as many) "
               f"{best_conv.test_accuracy:.2%}.")
    if ratios:
        low, high = (min(m.parameters / n for m, n in ratios),
                     max(m.parameters / n for m, n in ratios))
        at_best = next((m.parameters / n for m, n in ratios if m is best_mlp), None)
        summary += (f" For the same test accuracy, the fully connected networks use {low:.1f}x "
                    f"to {high:.1f}x the parameters of a ConvNet")
        summary += (f", {at_best:.0f}x at the best fully connected accuracy" if at_best
                    else "") + " (the seed says about 40x)."
        summary += (" The ratio grows with the accuracy asked for: the fully connected "
                    "networks' accuracy levels off as they widen, the ConvNets' keeps rising.")
    lines.append(summary)

    plt, fig = _pyplot(), None
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plt is not None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for family, marker in (("ConvNet", "o-"), ("MLP", "s-")):
            rs = sorted((r for r in results if r.family == family), key=lambda r: r.parameters)
            ax.plot([r.parameters for r in rs], [100 * r.test_accuracy for r in rs], marker,
                    label="ConvNet" if family == "ConvNet" else "fully connected")
            for r in rs:
                ax.annotate(r.name.split(" ", 1)[1], (r.parameters, 100 * r.test_accuracy),
                            fontsize=7, xytext=(4, -10), textcoords="offset points")
        ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (%)",
               title=f"Fashion-MNIST, {args.epochs} epoch(s), {n_train:,} training images")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    return _write_report(out, "params", lines, plt, fig, "test accuracy against parameters")


def _write_report(out: Path, name: str, lines: list[str], plt, fig, alt: str) -> str:
    """Write out/name.md from `lines`, with `fig` (None without matplotlib) saved as out/name.png
    and shown at the end; return the report's text."""
    if fig is not None:
        fig.tight_layout()
        try:
            _io.save_figure(fig, out / f"{name}.png", dpi=100)
        finally:
            plt.close(fig)
        lines = [*lines, "", f"![{alt}]({name}.png)"]
    report = "\n".join(lines) + "\n"
    _io.write_text(out / f"{name}.md", report)
    return report


# ---- relu vs tanh --------------------------------------------------------------------------------

@dataclass
class Curve:
    activation: str
    epochs: list[float] = field(default_factory=list)   # fractional epochs at checkpoints
    seconds: list[float] = field(default_factory=list)  # training time, evaluation excluded
    train_error: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")

    def first_below(self, threshold: float) -> tuple[float, float] | None:
        """(epochs, seconds) at the first checkpoint with training error <= threshold."""
        for e, s, err in zip(self.epochs, self.seconds, self.train_error):
            if err <= threshold:
                return e, s
        return None


def _train_curve(activation, train, test, probe, args) -> Curve:
    """Train the ConvNet with ``activation``, measuring the training error on ``probe`` (a fixed
    sample of training images) ``checkpoints`` times per epoch, and the test accuracy at the
    end."""
    init.manual_seed(args.seed)
    model = convnet(activation=activation)
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    else:
        optimizer = optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(args.seed)  # the same batches for both activations
    x, y = train
    steps = -(-len(x) // args.batch_size)
    every = max(1, steps // args.checkpoints)
    # early in the first epoch the error falls fastest: measure there at steps 8, 16, 32, ... too
    early = {8 * 2**k for k in range(steps.bit_length()) if 8 * 2**k < every}
    curve = Curve(activation)
    curve.epochs.append(0.0)
    curve.seconds.append(0.0)
    curve.train_error.append(1 - evaluate(model, *probe)[1])
    elapsed = 0.0
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        with progress_bar(steps, f"{activation} epoch {epoch + 1}/{args.epochs}", "step",
                          args.progress) as bar:
            for step in range(steps):
                batch = order[step * args.batch_size:(step + 1) * args.batch_size]
                start = time.perf_counter()
                train_step(model, loss_fn, optimizer, x[batch], y[batch])
                elapsed += time.perf_counter() - start
                bar.update()
                if ((step + 1) % every == 0 or step + 1 == steps
                        or (epoch == 0 and step + 1 in early)):
                    curve.epochs.append(epoch + (step + 1) / steps)
                    curve.seconds.append(elapsed)
                    curve.train_error.append(1 - evaluate(model, *probe)[1])
                    bar.set_postfix(train_error=f"{curve.train_error[-1]:.2%}", refresh=False)
        print(f"{activation}: epoch {epoch + 1}: training error {curve.train_error[-1]:.2%}, "
              f"{elapsed:.0f} s of training so far")
    curve.test_accuracy = evaluate(model, *test)[1]
    return curve


def relu_vs_tanh_experiment(args) -> str:
    """Train the ConvNet with ReLU and with tanh; write relu-vs-tanh.md and .png."""
    train, test, data = _setup(args)
    probe_rng = np.random.default_rng(args.seed + 1)
    probe_idx = probe_rng.choice(len(train[0]), min(args.probe, len(train[0])), replace=False)
    probe = (train[0][probe_idx], train[1][probe_idx])
    curves = [_train_curve(a, train, test, probe, args) for a in ("relu", "tanh")]

    thresholds = sorted(args.thresholds, reverse=True)
    opt = (f"SGD with momentum 0.9, lr {args.lr:g}" if args.optimizer == "sgd"
           else f"Adam, lr {args.lr:g}")
    lines = ["# ReLU against tanh: how fast the ConvNet trains", "",
             "Krizhevsky et al. (2012) report that a four-layer ConvNet with ReLUs reaches 25% "
             "training error on CIFAR-10 six times faster than the same network with tanh. "
             "Here the default `fastconv train` ConvNet (conv32 5x5, pool, conv64 5x5, pool, "
             "fc128, fc10) is trained on Fashion-MNIST with each activation: same "
             f"initialisation seed, same batches (of {args.batch_size}), same optimiser ({opt}). "
             f"The training error is measured {args.checkpoints} times per epoch (and after 8, 16, "
             "32, ... steps in the first epoch) on a fixed "
             f"sample of {len(probe[0]):,} training images (eval mode); seconds count training "
             "steps only.", "",
             _provenance(args, data, train, test), "",
             "| training error reached | ReLU: epochs | ReLU: seconds | tanh: epochs | "
             "tanh: seconds | tanh / ReLU (seconds) |", "|---|---:|---:|---:|---:|---:|"]
    for t in thresholds:
        hits = [c.first_below(t / 100) for c in curves]
        cells = []
        for hit in hits:
            cells += ["not reached", ""] if hit is None else [f"{hit[0]:.2f}", f"{hit[1]:.0f}"]
        ratio = (f"{hits[1][1] / hits[0][1]:.1f}x" if None not in hits and hits[0][1] > 0
                 else "")
        lines.append(f"| {t:g}% | " + " | ".join(cells) + f" | {ratio} |")
    lines += ["", "Training error per epoch (end of epoch):", "",
              "| epoch | " + " | ".join(c.activation for c in curves) + " |",
              "|---:|" + "---:|" * len(curves)]
    per_epoch = [[err for e, err in zip(c.epochs, c.train_error) if float(e).is_integer()]
                 for c in curves]
    for i in range(args.epochs + 1):
        lines.append(f"| {i} | " + " | ".join(f"{pe[i]:.2%}" for pe in per_epoch) + " |")
    lines += ["", "Test accuracy after training: " + ", ".join(
        f"{c.activation} {c.test_accuracy:.2%}" for c in curves) + "."]

    headline = [c.first_below(0.25) for c in curves]
    lines += ["", "## Result", ""]
    if None in headline:
        missing = " and ".join(c.activation for c, h in zip(curves, headline) if h is None)
        lines.append(f"Within {args.epochs} epoch(s), {missing} did not reach 25% training "
                     "error, so no ratio at 25%.")
    else:
        (e_r, s_r), (e_t, s_t) = headline
        lines.append(f"At 25% training error, ReLU needed {e_r:.2f} epochs ({s_r:.0f} s) and "
                     f"tanh {e_t:.2f} epochs ({s_t:.0f} s): tanh took {s_t / s_r:.1f}x as long "
                     "(Krizhevsky et al.: about 6x on CIFAR-10). Each figure is the first "
                     "measurement at or below the threshold, so it may overshoot by up to the "
                     "gap to the previous measurement.")
    lines.append(_lower_thresholds_sentence(curves, thresholds))

    plt, fig = _pyplot(), None
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if plt is not None:
        fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for c in curves:
            label = "ReLU" if c.activation == "relu" else "tanh"
            style = "-" if c.activation == "relu" else "--"
            ax_e.plot(c.epochs, [100 * e for e in c.train_error], style, label=label)
            ax_s.plot(c.seconds, [100 * e for e in c.train_error], style, label=label)
        for ax, xlabel in ((ax_e, "epochs"), (ax_s, "training seconds")):
            ax.axhline(25, color="grey", lw=0.8, ls=":")
            ax.set(xlabel=xlabel, yscale="log")
            ax.grid(alpha=0.3, which="both")
            ax.legend()
        ax_e.set_ylabel("training error (%)")
        fig.suptitle("ConvNet on Fashion-MNIST: ReLU against tanh (dotted: 25%)")
    return _write_report(out, "relu-vs-tanh", lines, plt, fig,
                         "training error against epochs and seconds")


def _lower_thresholds_sentence(curves, thresholds) -> str:
    parts = []
    for t in thresholds:
        if t == 25:
            continue
        hits = [c.first_below(t / 100) for c in curves]
        if None in hits:
            parts.append(f"{t:g}%: " + ", ".join(
                f"{c.activation} {'not reached' if h is None else f'{h[1]:.0f} s'}"
                for c, h in zip(curves, hits)))
        else:
            parts.append(f"{t:g}%: tanh took {hits[1][1] / hits[0][1]:.1f}x as long")
    return ("At lower training errors — " + "; ".join(parts) + ".") if parts else ""


# ---- command line --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-subcommands of ``fastconv experiment``."""
    sub = parser.add_subparsers(dest="experiment", required=True)
    p = sub.add_parser("params", help="parameters of the ConvNet against fully connected "
                                      "networks of comparable accuracy")
    p.add_argument("--epochs", type=positive_int, default=3,
                   help="epochs per network (default 3)")
    p.add_argument("--lr", type=positive_number, default=1e-3,
                   help="Adam learning rate (default 1e-3)")
    p.add_argument("--lr-decay", type=decay_factor, default=0.5, metavar="GAMMA",
                   help="learning rate factor in (0, 1] after each epoch (default 0.5)")
    r = sub.add_parser("relu-vs-tanh", help="training speed of the ConvNet with ReLU and tanh")
    r.add_argument("--epochs", type=positive_int, default=3,
                   help="epochs per network (default 3)")
    r.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd",
                   help="sgd (with momentum 0.9, as Krizhevsky et al.; default) or adam")
    r.add_argument("--lr", type=positive_number, default=0.01,
                   help="learning rate (default 0.01)")
    r.add_argument("--checkpoints", type=positive_int, default=20,
                   help="training-error measurements per epoch (default 20)")
    r.add_argument("--probe", type=positive_int, default=2000,
                   help="training images the training error is measured on (default 2000)")
    r.add_argument("--thresholds", type=percentage, nargs="+", default=[25, 15, 10],
                   help="training errors in %% to time (default 25 15 10)")
    for q in (p, r):
        q.add_argument("--batch-size", type=positive_int, default=32,
                       help="mini-batch size (default 32)")
        q.add_argument("--output-dir", type=Path, default=Path("docs"),
                       help="where the report and figure go (default docs)")
        add_data_arguments(q)


def run(args: argparse.Namespace) -> int:
    """``fastconv experiment NAME``: UsageError for options, paths or data refused before
    training."""
    args.argv = sys.argv[1:] if getattr(args, "argv", None) is None else args.argv
    args.seed = 0 if args.seed is None else args.seed
    args.dataset = args.dataset or "fashion-mnist"
    folder, name = Path(args.output_dir), args.experiment  # the report's name
    check_outputs("--output-dir", (folder / f"{name}.md", folder / f"{name}.png"))
    experiment = {"params": params_experiment, "relu-vs-tanh": relu_vs_tanh_experiment}
    report = experiment[args.experiment](args)
    print("\n" + report)
    print(f"wrote {args.output_dir}")
    return 0
