"""``fastconv train``: train a small ConvNet on Fashion-MNIST with fastconv's layers.

The network (LeCun-style): two blocks of 5x5 convolution + activation + 2x2 max pooling, then a
fully connected hidden layer and a 10-way linear output, trained with softmax cross-entropy and
Adam (lr 1e-3, halved after each epoch) on mini-batches of 32; in 3 epochs on the full
Fashion-MNIST that passes 90% test accuracy. Optional dropout before each fully connected layer
and batch normalisation after each convolution and the hidden layer. Everything runs on
``fastconv.nn`` (so on fastconv's C kernels) in float32.

The building blocks (``convnet``, ``mlp``, ``train_step``, ``evaluate``, ``fit``) are reused by
``fastconv experiment`` (see ``fastconv.experiments``).

A run can be stopped and resumed: it writes a checkpoint (model, optimiser state, random
generators, epoch and step, history, the options that define the run) after every epoch and,
on SIGINT or SIGTERM, after the step in progress, then exits with status 130 or 143;
``fastconv train --resume PATH.ckpt`` continues it to exactly the result an uninterrupted run
gives. Every file is written atomically (``fastconv._io``).

Files: ``--output PATH`` names the run; a trailing ``.npz`` is dropped and each file appends its
own suffix, so ``--output run_lr0.001`` writes ``run_lr0.001.npz`` (the model: weights plus the
architecture and history as its metadata member), ``run_lr0.001.json`` (the same metadata, for
reading), ``run_lr0.001.png`` (the curves) and, while the run is unfinished,
``run_lr0.001.ckpt``. Two runs share files only if they share a name.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import fastconv
from fastconv import _io, datasets, init, nn, optim
from fastconv._progress import progress_bar

__all__ = ["Architecture", "convnet", "mlp", "count_parameters", "train_step", "evaluate",
           "fit", "TrainingState", "Interrupted", "stop_on_signals", "load_model",
           "OutputPaths", "check_outputs", "add_arguments", "run",
           "UsageError"]

# each activation follows a layer whose output nothing else keeps, so ReLU may overwrite it
ACTIVATIONS = {"relu": functools.partial(nn.ReLU, inplace=True), "tanh": nn.Tanh}
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
    grad = loss_fn.backward()
    if isinstance(model, nn.Sequential):  # the images' gradient is not needed
        model.backward(grad, input_grad=False)
    else:
        model.backward(grad)
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


@dataclass
class TrainingState:
    """Where a run stands, besides the model, the optimiser and the random generators: what a
    checkpoint must hold to resume exactly. ``fit`` updates it after every step."""

    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed in the current epoch
    order: np.ndarray | None = None  # the current epoch's shuffle, once it has begun
    seen: int = 0  # the current epoch's images, right answers, summed loss and seconds so far
    correct: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    history: History = field(default_factory=History)


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM; ``saved`` tells whether its checkpoint was written."""

    def __init__(self, signum: int, saved: bool):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = signum, saved


class StopRequest:
    """Set by ``stop_on_signals``' handler; ``fit`` looks at it between steps."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT and SIGTERM ask the run to stop between steps (``fit`` then
    checkpoints and raises Interrupted); a second signal stops at once. Outside the main thread
    (where Python cannot take signals) nothing changes."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    # only a flag: printing here could re-enter a write to stderr (a progress bar's) and fail
    def handler(signum, frame):
        if request.signum is not None:
            raise Interrupted(signum, saved=False)
        request.signum = signum

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def fit(model, optimizer, train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray], epochs: int, batch_size: int,
        rng: np.random.Generator, lr_decay: float = 1.0, progress: bool = True,
        log=print, *, state: TrainingState | None = None, checkpoint=None,
        stop: StopRequest | None = None, step=train_step) -> History:
    """Train ``model`` for ``epochs`` passes over ``train`` in shuffled mini-batches, evaluating
    on ``test`` after each; ``log`` gets one line per epoch. The optimiser's ``lr`` is multiplied
    by ``lr_decay`` after each epoch. With ``progress`` a bar (tqdm's if installed) shows the
    running loss, accuracy and images/s.

    To resume, pass the ``state`` a checkpoint held (with the model, optimiser and generators
    restored); ``checkpoint(state)`` is called after every epoch and, when ``stop`` (from
    ``stop_on_signals``) is set, after the step in progress, before Interrupted is raised.
    ``step`` takes each optimiser step, with ``train_step``'s signature (e.g.
    ``fastconv.distributed.DataParallel(client).step``: the batch split across a cluster).
    """
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = train
    state = state if state is not None else TrainingState()
    model.train()
    while state.epoch < epochs:
        epoch = state.epoch + 1
        if state.order is None:
            state.order = rng.permutation(len(x_train))
        order = state.order
        steps = -(-len(order) // batch_size)
        start = time.perf_counter()
        with progress_bar(len(order), f"epoch {epoch}/{epochs}", "img", progress) as bar:
            bar.update(state.seen)
            while state.step < steps:
                batch = order[state.step * batch_size:(state.step + 1) * batch_size]
                loss, right = step(model, loss_fn, optimizer, x_train[batch], y_train[batch])
                state.step += 1
                state.seen += len(batch)
                state.correct += right
                state.loss_sum += loss * len(batch)
                bar.update(len(batch))
                bar.set_postfix(loss=f"{state.loss_sum / state.seen:.3f}",
                                acc=f"{state.correct / state.seen:.2%}", refresh=False)
                if stop is not None and stop.signum is not None and state.step < steps:
                    state.seconds += time.perf_counter() - start
                    _stop(stop.signum, checkpoint, state)
        seconds = state.seconds + time.perf_counter() - start
        optimizer.lr *= lr_decay
        test_loss, test_accuracy = evaluate(model, *test)
        record = Epoch(epoch, state.loss_sum / state.seen, state.correct / state.seen,
                       test_loss, test_accuracy, seconds, state.seen / seconds)
        state.history.epochs.append(record)
        state.epoch, state.step, state.order = epoch, 0, None
        state.seen = state.correct = 0
        state.loss_sum = state.seconds = 0.0
        log(f"epoch {epoch}/{epochs}: train loss {record.train_loss:.4f} accuracy "
            f"{record.train_accuracy:.2%} | test loss {test_loss:.4f} accuracy "
            f"{test_accuracy:.2%} | {seconds:.1f} s ({record.images_per_second:.0f} images/s)")
        if stop is not None and stop.signum is not None and state.epoch < epochs:
            _stop(stop.signum, checkpoint, state)
        if checkpoint is not None:
            checkpoint(state)
    return state.history


def _stop(signum: int, checkpoint, state: TrainingState):
    """Save the checkpoint (if there is one) and raise Interrupted."""
    print(f"\n{signal.Signals(signum).name}: stopping"
          + (", saving a checkpoint (send it again to stop at once)" if checkpoint else ""),
          file=sys.stderr, flush=True)
    if checkpoint is not None:
        checkpoint(state)
    raise Interrupted(signum, saved=checkpoint is not None)


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
    try:
        _io.save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return True


def load_model(path: str | Path) -> nn.Sequential:
    """Rebuild a model saved by ``fastconv train``: the architecture from the metadata member
    of the .npz, then its weights, in eval mode. (Files from fastconv 0.1, without that member,
    take the architecture from the .json beside them.)"""
    path = Path(path)
    meta = _io.read_metadata("load_model", path)
    if meta is None:
        meta = json.loads(path.with_suffix(".json").read_text())
    try:
        arch = meta["architecture"]
        model = Architecture(**{**arch, "channels": tuple(arch["channels"])}).build()
    except (KeyError, TypeError) as exc:
        raise ValueError(f"load_model: {str(path)!r} has no readable architecture in its "
                         f"metadata: {exc!r}") from exc
    model.load(path)
    model.eval()
    return model


# ---- data ----------------------------------------------------------------------------------------

class UsageError(ValueError):
    """Options, paths or data that the command refuses before doing any work; the command line
    shows it as a usage error (exit status 2)."""


def data_source(data, dataset: str, progress: bool = True) -> tuple[Path, str]:
    """(folder, description) of the data: ``data`` if given, else dataset's ``locate``."""
    if data is not None:
        return Path(data), str(data)
    try:
        source = datasets.locate(dataset, progress=progress)
    except OSError as exc:
        raise UsageError(str(exc)) from exc
    return source.folder, source.description


def load_data(folder, limit: int | None, test_limit: int | None, rng: np.random.Generator):
    """Training and test sets from the MNIST-format ``folder``, checked for what the ConvNet
    needs (UsageError naming the file otherwise), the training set cut to a random ``limit``
    images and the test set to its first ``test_limit``."""
    splits = []
    for split in ("train", "test"):
        try:
            image_path = datasets.idx_files(folder, split)[0]
            x, y = datasets.load_fashion_mnist(folder, split)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if len(x) == 0:
            raise UsageError(f"{image_path} holds no images")
        if x.shape[1:] != IMAGE_SHAPE:
            raise UsageError(f"{image_path} holds {x.shape[2]}x{x.shape[3]} images; the ConvNet "
                             f"takes {IMAGE_SHAPE[1]}x{IMAGE_SHAPE[2]} (MNIST-format data)")
        splits.append((x, y))
    (x_train, y_train), (x_test, y_test) = splits
    if limit is not None and limit < len(x_train):
        keep = np.sort(rng.choice(len(x_train), limit, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    if test_limit is not None:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    return (x_train, y_train), (x_test, y_test)


def _fingerprint(train, test) -> str:
    """A digest of the data a run trains and tests on (a resumed run must see the same): the
    shapes, the labels and each image's pixel sum, which any changed image changes; hashing
    every pixel would add most of a second to each start."""
    digest = hashlib.sha256()
    for images, labels in (train, test):
        digest.update(repr(images.shape).encode())
        digest.update(images.sum(axis=tuple(range(1, images.ndim)), dtype=np.float64).data)
        digest.update(np.ascontiguousarray(labels).data)
    return digest.hexdigest()


# ---- options -------------------------------------------------------------------------------------

def _number_type(parse, valid, what: str):
    """An argparse type: `parse` the text, then require `valid` (a usage error otherwise)."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    convert.__name__ = what
    return convert


positive_int = _number_type(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")
positive_number = _number_type(float, lambda v: 0 < v < math.inf, "a positive finite number")
# 1 keeps the rate; above 1 it would grow every epoch, 0 would stop learning after one
decay_factor = _number_type(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
probability = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
percentage = _number_type(float, lambda v: 0 < v < 100, "a percentage in (0, 100)")

# The options that define a run, with their defaults. The parser's defaults are None, so that a
# resumed run can tell an option given on the command line from one left out.
RUN_DEFAULTS = {"epochs": 3, "batch_size": 32, "lr": 1e-3, "lr_decay": 0.5,
                "activation": "relu", "dropout": 0.0, "batchnorm": False, "channels": [32, 64],
                "hidden": 128, "seed": 0, "dataset": "fashion-mnist", "data": None,
                "limit": None, "test_limit": None}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``fastconv train`` and ``fastconv experiment``."""
    parser.add_argument("--dataset", choices=sorted(datasets.DATASETS), default=None,
                        help="fashion-mnist (default) or mnist: from the cache "
                             "(FASTCONV_DATA, else ~/.cache/fastconv), else Debian's "
                             "dataset-fashion-mnist, else downloaded once into the cache, else "
                             "the subset shipped with fastconv (the last two: Fashion-MNIST "
                             "only; FASTCONV_OFFLINE=1 never downloads)")
    parser.add_argument("--data", type=Path, default=None, metavar="FOLDER",
                        help="a folder of MNIST-format IDX files to use instead")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="train on a random N training images only (default: all)")
    parser.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                        help="test on the first N test images only (default: all)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="kernel threads (default: OpenMP's)")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="random seed (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastconv train``."""
    d = RUN_DEFAULTS
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"passes over the training set (default {d['epochs']})")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help=f"mini-batch size (default {d['batch_size']})")
    parser.add_argument("--lr", type=positive_number, default=None,
                        help=f"Adam learning rate (default {d['lr']:g})")
    parser.add_argument("--lr-decay", type=decay_factor, default=None, metavar="GAMMA",
                        help="multiply the learning rate by GAMMA in (0, 1] after each epoch "
                             f"(default {d['lr_decay']}; 1 keeps it constant)")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                        help=f"activation after every hidden layer (default {d['activation']})")
    parser.add_argument("--dropout", type=probability, default=None, metavar="P",
                        help="dropout probability in [0, 1) before each fully connected layer "
                             "(default 0: none)")
    parser.add_argument("--batchnorm", action="store_const", const=True, default=None,
                        help="batch normalisation after each convolution and the hidden layer")
    parser.add_argument("--channels", type=positive_int, nargs="+", default=None,
                        help="output channels of the conv blocks (default "
                             f"{' '.join(map(str, d['channels']))})")
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help=f"width of the fully connected hidden layer (default {d['hidden']})")
    parser.add_argument("--output", type=Path, default=None, metavar="PATH",
                        help="the run's name (default convnet): writes PATH.npz (the model), "
                             "PATH.json, PATH.png and, until it finishes, PATH.ckpt; a trailing "
                             ".npz is dropped first")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="train data-parallel on the dask.distributed cluster whose "
                              "scheduler is at ADDRESS, e.g. tcp://10.0.0.1:8786 (needs "
                              "fastconv[dask])")
    cluster.add_argument("--workers", type=positive_int, default=None, metavar="N",
                         help="train data-parallel on N local worker processes of one thread "
                              "each (needs fastconv[dask])")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing model or an unfinished run's checkpoint")
    parser.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                        help="continue the run whose checkpoint is CKPT, with its options "
                             "(--epochs may raise the total; --threads and --no-progress apply)")
    add_data_arguments(parser)


def run_options(args: argparse.Namespace, saved: dict | None = None) -> dict:
    """The options that define the run: those given, then the checkpoint's (`saved`), then the
    defaults. A resumed run may change only --epochs (not below the epochs done)."""
    options = {}
    for name, default in RUN_DEFAULTS.items():
        given = getattr(args, name)
        if isinstance(given, Path):
            given = str(given.resolve())
        if saved is None:
            options[name] = default if given is None else given
        elif given is None or given == saved[name] or name == "epochs":
            options[name] = saved[name] if given is None else given
        else:
            raise UsageError(f"--{name.replace('_', '-')} {given} differs from the resumed "
                             f"run's {saved[name]}: --resume continues a run with its own "
                             "options")
    options["channels"] = list(options["channels"])
    return options


# ---- output files --------------------------------------------------------------------------------

def check_outputs(option: str, paths) -> None:
    """Refuse (UsageError, naming `option`), before any work, files that could not be written
    at the end: a path that is a folder, or a folder that cannot be made or written in."""
    for path in paths:
        if Path(path).is_dir():
            raise UsageError(f"{option}: {path} is a directory")
    for folder in {Path(path).parent for path in paths}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _io.check_writable(folder)
        except OSError as exc:
            raise UsageError(f"{option}: cannot write in {folder}: "
                             f"{exc.strerror or exc}") from exc


@dataclass(frozen=True)
class OutputPaths:
    """The files of a run named `stem`: the suffix of each is appended, never substituted, so
    two names never share a file (run_lr0.001 and run_lr0.01 stay apart)."""

    stem: str

    @classmethod
    def of(cls, output) -> OutputPaths:
        name = str(output)
        return cls(name[:-4] if name.endswith(".npz") else name)

    @property
    def model(self) -> Path:
        return Path(self.stem + ".npz")

    @property
    def metadata(self) -> Path:
        return Path(self.stem + ".json")

    @property
    def figure(self) -> Path:
        return Path(self.stem + ".png")

    @property
    def checkpoint(self) -> Path:
        return Path(self.stem + ".ckpt")

    def check(self, fresh: bool, force: bool) -> None:
        """Refuse, before any work, outputs that cannot be written or would overwrite what
        they should not: a folder in the way, an unwritable folder, an existing model or an
        unfinished run's checkpoint (unless `force`, or when resuming: `fresh` False)."""
        check_outputs("--output", (self.model, self.metadata, self.figure, self.checkpoint))
        if fresh and not force:
            if self.checkpoint.exists():
                raise UsageError(f"{self.checkpoint} holds an unfinished run: continue it with "
                                 f"--resume {self.checkpoint}, or start over with --force")
            if self.model.exists():
                raise UsageError(f"{self.model} exists: choose another --output, or overwrite "
                                 "it with --force")


# ---- checkpoints ---------------------------------------------------------------------------------

CHECKPOINT_FORMAT = "fastconv train checkpoint 1"


def save_checkpoint(path: Path, model, optimizer, state: TrainingState, rng, meta: dict) -> None:
    """Everything needed to continue the run exactly, in one .npz, written atomically: the
    model's and optimiser's arrays and this epoch's shuffle as members, the rest as metadata."""
    arrays = {f"model/{key}": value for key, value in model.state_dict().items()}
    opt = optimizer.state_dict()
    for i, entry in enumerate(opt["state"]):
        arrays.update({f"optimizer/{i}/{name}": value for name, value in entry.items()})
    if state.order is not None:
        arrays["order"] = state.order
    position = {k: getattr(state, k) for k in ("epoch", "step", "seen", "correct", "loss_sum",
                                               "seconds")}
    _io.save_npz(path, arrays, {
        **meta, "format": CHECKPOINT_FORMAT, "arrays": sorted(arrays),
        "optimizer": {"hyperparameters": opt["hyperparameters"],
                      "state": [sorted(entry) for entry in opt["state"]]},
        "position": position, "history": [asdict(e) for e in state.history.epochs],
        "rng": {"shuffle": rng.bit_generator.state,
                "init": init.default_generator().bit_generator.state}})


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's metadata (UsageError if it is not one)."""
    try:
        meta = _io.read_metadata("--resume", path)
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if meta is None or meta.get("format") != CHECKPOINT_FORMAT:
        raise UsageError(f"--resume: {path} is not a checkpoint of fastconv train")
    missing = sorted({"arrays", "fingerprint", "history", "optimizer", "options", "output",
                      "position", "rng"} - set(meta))
    if missing or not isinstance(meta["options"], dict) \
            or set(meta["options"]) != set(RUN_DEFAULTS):
        raise UsageError(f"--resume: {path} is an incomplete checkpoint (missing {missing})")
    return meta


def restore_checkpoint(path: Path, meta: dict, model, optimizer, rng, n_train: int
                       ) -> TrainingState:
    """Load a checkpoint's arrays into `model` and `optimizer`, its generators into `rng` and
    fastconv.init's; return its TrainingState."""
    own = dict(model.state_dict())
    params = list(model.parameters())

    def bound(name: str) -> int:  # the most bytes each member may unpack to
        kind, _, rest = name.partition("/")
        if kind == "model" and rest in own:
            size = own[rest].size
        elif kind == "optimizer" and rest.split("/")[0].isdigit() \
                and int(rest.split("/")[0]) < len(params):
            size = params[int(rest.split("/")[0])].data.size
        else:
            size = n_train if name == "order" else 0
        return size * 8 + _io.NPY_HEADER_BYTES

    try:
        arrays, _ = _io.load_npz("--resume", path, meta["arrays"], bound)
        model.load_state_dict({key: arrays[f"model/{key}"] for key in own})
        optimizer.load_state_dict({
            "hyperparameters": meta["optimizer"]["hyperparameters"],
            "state": [{name: arrays[f"optimizer/{i}/{name}"] for name in names}
                      for i, names in enumerate(meta["optimizer"]["state"])]})
        rng.bit_generator.state = meta["rng"]["shuffle"]
        init.default_generator().bit_generator.state = meta["rng"]["init"]
        state = TrainingState(**meta["position"], order=arrays.get("order"),
                              history=History([Epoch(**e) for e in meta["history"]]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--resume: {path} does not fit this run: {exc}") from exc
    return state


# ---- the command ---------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    """``fastconv train``: check the options and outputs, load and check the data, train (or
    resume), report, save. UsageError for anything refused before the work starts; 130 or 143
    when SIGINT or SIGTERM stopped the run (its checkpoint saved)."""
    distributed = None
    if args.scheduler is not None or args.workers is not None:
        try:
            from fastconv import distributed
        except ImportError as exc:
            option = "--scheduler" if args.workers is None else "--workers"
            raise UsageError(f"{option}: {exc}") from exc
    saved = read_checkpoint(args.resume) if args.resume is not None else None
    options = run_options(args, saved and saved["options"])
    if saved is not None and options["epochs"] < saved["position"]["epoch"]:
        raise UsageError(f"--epochs {options['epochs']} is fewer than the "
                         f"{saved['position']['epoch']} the resumed run has done")
    paths = OutputPaths(saved["output"]) if saved is not None else \
        OutputPaths.of(args.output if args.output is not None else "convnet")
    if saved is not None and args.output is not None \
            and os.path.abspath(OutputPaths.of(args.output).stem) != paths.stem:
        raise UsageError(f"--output {args.output} differs from the resumed run's {paths.stem}")
    paths.check(fresh=saved is None, force=args.force)

    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    init.manual_seed(options["seed"])
    rng = np.random.default_rng(options["seed"])
    folder, description = data_source(options["data"], options["dataset"], args.progress)
    print(f"data: {description}")
    train, test = load_data(folder, options["limit"], options["test_limit"], rng)
    fingerprint = _fingerprint(train, test)
    if saved is not None and saved["fingerprint"] != fingerprint:
        raise UsageError(f"--resume: the data ({description}) differ from the data the run "
                         "began with")
    arch = Architecture(tuple(options["channels"]), 5, options["hidden"], options["activation"],
                        options["dropout"], options["batchnorm"])
    model = arch.build()
    optimizer = optim.Adam(model.parameters(), lr=options["lr"])
    state = None
    if saved is not None:
        state = restore_checkpoint(args.resume, saved, model, optimizer, rng, len(train[0]))
        print(f"resuming {args.resume}: {state.epoch} epoch(s) and {state.step} step(s) done")
    print(f"model: {count_parameters(model):,} parameters; {len(train[0]):,} training and "
          f"{len(test[0]):,} test images; {options['epochs']} epoch(s) of batches of "
          f"{options['batch_size']}, Adam lr {options['lr']:g} x {options['lr_decay']:g} per "
          f"epoch; {fastconv.get_num_threads()} thread(s), {fastconv.selected_isa()} kernels")
    # the run's name as an absolute path: it can be resumed from any folder
    meta = {"output": os.path.abspath(paths.stem), "options": options,
            "fingerprint": fingerprint}

    def checkpoint(state: TrainingState) -> None:
        save_checkpoint(paths.checkpoint, model, optimizer, state, rng, meta)

    try:
        with contextlib.ExitStack() as cluster, stop_on_signals() as stop:
            step = train_step
            if distributed is not None:
                client = cluster.enter_context(distributed.connect(args.scheduler, args.workers))
                threads = client.nthreads()
                print(f"cluster: {client.scheduler.address}, {len(threads)} worker(s) of "
                      f"{sorted(set(threads.values()))} thread(s); each batch split across them")
                step = distributed.DataParallel(client).step
            history = fit(model, optimizer, train, test, options["epochs"],
                          options["batch_size"], rng, options["lr_decay"],
                          progress=args.progress, state=state, checkpoint=checkpoint, stop=stop,
                          step=step)
    except Interrupted as stopped:
        what = (f"checkpoint saved to {paths.checkpoint}; continue with `fastconv train "
                f"--resume {paths.checkpoint}`" if stopped.saved else
                "stopped at once; the last checkpoint, if any, is unchanged")
        print(f"interrupted by {stopped}: {what}", file=sys.stderr)
        return 128 + stopped.signum

    model_meta = {"architecture": asdict(arch),
                  "optimizer": {"name": "Adam", "lr": options["lr"],
                                "lr_decay": options["lr_decay"]},
                  "batch_size": options["batch_size"], "seed": options["seed"],
                  "data": description, "dataset": options["dataset"],
                  "training_images": len(train[0]), "test_images": len(test[0]),
                  "history": [asdict(e) for e in history.epochs]}
    model.save(paths.model, metadata=model_meta)
    _io.write_text(paths.metadata, json.dumps(model_meta, indent=2) + "\n")
    saved_files = [str(paths.model), str(paths.metadata)]
    if plot_history(history, paths.figure, f"fastconv ConvNet ({len(train[0]):,} training "
                                           "images)"):
        saved_files.append(str(paths.figure))
    paths.checkpoint.unlink(missing_ok=True)
    print(f"saved {', '.join(saved_files)}")
    print(f"test accuracy: {100 * history.epochs[-1].test_accuracy:.2f}%")
    return 0
