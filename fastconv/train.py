"""``fastconv train``: train a small ConvNet on Fashion-MNIST with fastconv's layers.

The network (LeCun-style): two blocks of 5x5 convolution + activation + 2x2 max pooling, then a
fully connected hidden layer and a 10-way linear output, trained with softmax cross-entropy and
Adam (lr 1e-3, halved after each epoch) on mini-batches of 32; in 3 epochs on the full
Fashion-MNIST that passes 90% test accuracy. Optional dropout before each fully connected layer
and batch normalisation after each convolution and the hidden layer. Everything runs on
``fastconv.nn`` (so on fastconv's C kernels) in float32.

The building blocks (``convnet``, ``mlp``, ``train_step``, ``evaluate``, ``fit``) are reused by
``fastconv experiment`` (see ``fastconv.experiments``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import fastconv
from fastconv import init, nn, optim
from fastconv.datasets import DEBIAN_FOLDER, default_folder, load_fashion_mnist

__all__ = ["Architecture", "convnet", "mlp", "count_parameters", "train_step", "evaluate",
           "fit", "load_model", "blas_single_threaded", "add_arguments", "run"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
IMAGE_SHAPE = (1, 28, 28)
N_CLASSES = 10


@dataclass
class Architecture:
    """What ``convnet`` builds; saved beside a trained model so that ``load_model`` can rebuild it.

    ``channels`` are the output channels of the convolution blocks, ``hidden`` the width of the
    fully connected hidden layer.
    """

    channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 5
    hidden: int = 128
    activation: str = "relu"
    dropout: float = 0.0
    batchnorm: bool = False

    def build(self) -> nn.Sequential:
        return convnet(**asdict(self))


def convnet(channels=(32, 64), kernel_size: int = 5, hidden: int = 128, activation: str = "relu",
            dropout: float = 0.0, batchnorm: bool = False) -> nn.Sequential:
    """The ConvNet: per entry of ``channels`` a block conv(k x k, 'same' padding) [+ batch norm]
    + activation + 2x2 max pool; then flatten, [dropout], linear(hidden) [+ batch norm] +
    activation, [dropout], linear(10). Input (N, 1, 28, 28), output (N, 10) logits."""
    act = ACTIVATIONS[activation]
    layers = []
    in_channels, size = IMAGE_SHAPE[0], IMAGE_SHAPE[1]
    for out_channels in channels:
        # a convolution followed by batch norm needs no bias: the norm's shift replaces it
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                                bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers += [act(), nn.MaxPool2d(2)]
        in_channels, size = out_channels, size // 2
    layers.append(nn.Flatten())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(in_channels * size * size, hidden, bias=not batchnorm))
    if batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(act())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, N_CLASSES))
    return nn.Sequential(*layers)


def mlp(hidden=(256,), activation: str = "relu") -> nn.Sequential:
    """A fully connected network: flatten, then linear + activation per entry of ``hidden``,
    then linear(10)."""
    layers = [nn.Flatten()]
    width = int(np.prod(IMAGE_SHAPE))
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


def count_parameters(model) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(int(p.data.size) for p in model.parameters())


def train_step(model, loss_fn, optimizer, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """One optimiser step on the batch ``(x, y)``; returns (mean loss, number classified right)."""
    optimizer.zero_grad()
    logits = model(x)
    loss = loss_fn.forward(logits, y)
    model.backward(loss_fn.backward())
    optimizer.step()
    return float(loss), int((logits.argmax(axis=1) == y).sum())


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``(x, y)``; restores train
    mode afterwards."""
    loss_fn = nn.CrossEntropyLoss()
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        total_loss += float(loss_fn.forward(logits, yb)) * len(xb)
        correct += int((logits.argmax(axis=1) == yb).sum())
    model.train()
    return total_loss / max(len(x), 1), correct / max(len(x), 1)


@dataclass
class Epoch:
    """One line of a training history."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    seconds: float  # training time of the epoch, evaluation excluded
    images_per_second: float


@dataclass
class History:
    epochs: list[Epoch] = field(default_factory=list)

    def column(self, name: str) -> list[float]:
        return [getattr(e, name) for e in self.epochs]


def fit(model, optimizer, train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray], epochs: int, batch_size: int,
        rng: np.random.Generator, lr_decay: float = 1.0, progress: bool = True,
        log=print) -> History:
    """Train ``model`` for ``epochs`` passes over ``train`` in shuffled mini-batches, evaluating
    on ``test`` after each; ``log`` gets one line per epoch. The optimiser's ``lr`` is multiplied
    by ``lr_decay`` after each epoch. With ``progress`` a tqdm bar shows the running loss,
    accuracy and images/s."""
    from tqdm import tqdm

    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = train
    history = History()
    model.train()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_train))
        seen = correct = 0
        loss_sum = 0.0
        start = time.perf_counter()
        with tqdm(total=len(order), desc=f"epoch {epoch}/{epochs}", unit="img",
                  disable=not progress, leave=False, dynamic_ncols=True) as bar:
            for first in range(0, len(order), batch_size):
                batch = order[first:first + batch_size]
                loss, right = train_step(model, loss_fn, optimizer, x_train[batch],
                                         y_train[batch])
                seen += len(batch)
                correct += right
                loss_sum += loss * len(batch)
                bar.update(len(batch))
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.2%}",
                                refresh=False)
        seconds = time.perf_counter() - start
        optimizer.lr *= lr_decay
        test_loss, test_accuracy = evaluate(model, *test)
        record = Epoch(epoch, loss_sum / seen, correct / seen, test_loss, test_accuracy,
                       seconds, seen / seconds)
        history.epochs.append(record)
        log(f"epoch {epoch}/{epochs}: train loss {record.train_loss:.4f} accuracy "
            f"{record.train_accuracy:.2%} | test loss {test_loss:.4f} accuracy "
            f"{test_accuracy:.2%} | {seconds:.1f} s ({record.images_per_second:.0f} images/s)")
    return history


def plot_history(history: History, path: Path, title: str) -> bool:
    """Loss and accuracy curves as a PNG; False (and nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    epochs = history.column("epoch")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    for split in ("train", "test"):
        ax_loss.plot(epochs, history.column(f"{split}_loss"), "o-", label=split)
        ax_acc.plot(epochs, [100 * a for a in history.column(f"{split}_accuracy")], "o-",
                    label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def load_model(path: str | Path) -> nn.Sequential:
    """Rebuild a model saved by ``fastconv train --output path``: the architecture from
    ``path`` with suffix .json, the weights from the .npz."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    arch = meta["architecture"]
    model = Architecture(**{**arch, "channels": tuple(arch["channels"])}).build()
    model.load(path)
    model.eval()
    return model


def describe_data(folder) -> str:
    if folder is None:
        folder = default_folder()
        if folder == DEBIAN_FOLDER:
            return f"Debian's dataset-fashion-mnist package ({folder})"
        return (f"the Fashion-MNIST subset shipped with fastconv ({folder}); "
                f"`apt-get install dataset-fashion-mnist` for the full set")
    return str(folder)


def load_data(folder, limit: int | None, test_limit: int | None, rng: np.random.Generator):
    """Training and test sets from ``folder`` (default: Debian's package, else the shipped
    subset), the training set cut to a random ``limit`` images and the test set to its first
    ``test_limit``."""
    x_train, y_train = load_fashion_mnist(folder, "train")
    x_test, y_test = load_fashion_mnist(folder, "test")
    if limit is not None and limit < len(x_train):
        keep = np.sort(rng.choice(len(x_train), limit, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    if test_limit is not None:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    return (x_train, y_train), (x_test, y_test)


def blas_single_threaded():
    """A context in which NumPy's BLAS (behind ``Linear``) uses one thread.

    A training step alternates between fastconv's OpenMP kernels and BLAS matrix products; both
    keep their threads spinning for a while after each call, so two pools of threads fight over
    the cores: on 2 cores a step of the default ConvNet took 110 ms instead of 39 ms. The fully
    connected layers are small, so one BLAS thread costs little.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``fastconv train`` and ``fastconv experiment``."""
    parser.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                        help="folder of Fashion-MNIST/MNIST IDX files (default: Debian's "
                             f"{DEBIAN_FOLDER} if installed, else the shipped subset)")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                        help="train on a random N training images only (default: all)")
    parser.add_argument("--test-limit", type=_positive_int, default=None, metavar="N",
                        help="test on the first N test images only (default: all)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="kernel threads (default: OpenMP's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastconv train``."""
    d = Architecture()
    parser.add_argument("--epochs", type=_positive_int, default=3, help="passes over the "
                        "training set (default 3)")
    parser.add_argument("--batch-size", type=_positive_int, default=32,
                        help="mini-batch size (default 32)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate "
                        "(default 1e-3)")
    parser.add_argument("--lr-decay", type=float, default=0.5, metavar="GAMMA",
                        help="multiply the learning rate by GAMMA after each epoch (default "
                             "0.5; 1 keeps it constant)")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default=d.activation,
                        help=f"activation after every hidden layer (default {d.activation})")
    parser.add_argument("--dropout", type=_probability, default=d.dropout, metavar="P",
                        help="dropout probability before each fully connected layer "
                             "(default 0: none)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="batch normalisation after each convolution and the hidden layer")
    parser.add_argument("--channels", type=_positive_int, nargs="+", default=list(d.channels),
                        help="output channels of the conv blocks (default "
                             f"{' '.join(map(str, d.channels))})")
    parser.add_argument("--hidden", type=_positive_int, default=d.hidden,
                        help=f"width of the fully connected hidden layer (default {d.hidden})")
    parser.add_argument("--output", type=Path, default=Path("convnet.npz"), metavar="PATH",
                        help="where to save the model (default convnet.npz); its architecture "
                             "and history go to PATH with suffix .json, the curves to .png")
    add_data_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """``fastconv train``: load the data, train, report, save."""
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    init.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"data: {describe_data(args.data)}")
    train, test = load_data(args.data, args.limit, args.test_limit, rng)
    arch = Architecture(tuple(args.channels), 5, args.hidden, args.activation, args.dropout,
                        args.batchnorm)
    model = arch.build()
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    print(f"model: {count_parameters(model):,} parameters; {len(train[0]):,} training and "
          f"{len(test[0]):,} test images; {args.epochs} epoch(s) of batches of "
          f"{args.batch_size}, Adam lr {args.lr:g} x {args.lr_decay:g} per epoch; "
          f"{fastconv.get_num_threads()} thread(s), {fastconv.selected_isa()} kernels")
    with blas_single_threaded():
        history = fit(model, optimizer, train, test, args.epochs, args.batch_size, rng,
                      args.lr_decay, progress=args.progress)

    output = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    meta = {"architecture": asdict(arch),
            "optimizer": {"name": "Adam", "lr": args.lr, "lr_decay": args.lr_decay},
            "batch_size": args.batch_size, "seed": args.seed,
            "data": str(args.data or default_folder()),
            "training_images": len(train[0]), "test_images": len(test[0]),
            "history": [asdict(e) for e in history.epochs]}
    output.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    saved = [str(output), str(output.with_suffix(".json"))]
    if plot_history(history, output.with_suffix(".png"),
                    f"fastconv ConvNet on Fashion-MNIST ({len(train[0]):,} training images)"):
        saved.append(str(output.with_suffix(".png")))
    print(f"saved {', '.join(saved)}")
    print(f"test accuracy: {100 * history.epochs[-1].test_accuracy:.2f}%")
    return 0

