"""The seed model, end to end: classify scikit-learn's handwritten digits (8x8 images, 10
classes) with a stack of Linear+Dropout blocks built with ``split_rngs`` + ``vmap`` and applied
with ``scan``, trained with ``nnx.jit`` and ``nnx.Optimizer``, checkpointed during training and
restored into a fresh model. Writes a figure: loss and accuracy curves, and test digits with
the model's predictions.

Run:  python examples/demo.py            (about 20 s on 2 CPU cores)
      python examples/demo.py --help     (the knobs)

Needs the ``demo`` extra: pip install "plait[demo]" (scikit-learn, matplotlib, tqdm, optax,
orbax-checkpoint).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import plait as nnx


class Block(nnx.Module):
    def __init__(self, hidden: int, rate: float, rngs: nnx.Rngs):
        self.linear = nnx.Linear(hidden, hidden, rngs=rngs)
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        return self.dropout(jax.nn.gelu(self.linear(x)))


class Classifier(nnx.Module):
    """64 pixels -> ``hidden`` -> ``depth`` residual blocks (one stacked set of parameters) -> 10 logits."""

    def __init__(self, depth: int, hidden: int, rate: float, rngs: nnx.Rngs):
        self.depth = depth
        self.project = nnx.Linear(64, hidden, rngs=rngs)

        @nnx.split_rngs(splits=depth)   # one init key per layer, for this call only
        @nnx.vmap(axis_size=depth)      # so every layer gets its own weights
        def create_stack(rngs: nnx.Rngs):
            return Block(hidden, rate, rngs)

        self.stack = create_stack(rngs)
        self.head = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        # Split the Dropout streams again for the length of the scan: every layer draws its
        # own mask, and a new one on every call.
        @nnx.split_rngs(splits=self.depth)
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def forward(x, block):
            return x + block(x)

        return self.head(forward(jax.nn.gelu(self.project(x)), self.stack))


class Metrics:
    """Running loss and accuracy averages over an epoch.

    The same calls as Flax NNX's ``nnx.MultiMetric(loss=nnx.metrics.Average("loss"),
    accuracy=nnx.metrics.Accuracy())``, so it can be swapped for that when plait has it.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.correct, self.count = 0.0, 0, 0

    def update(self, *, loss, logits, labels) -> None:
        n = int(labels.shape[0])
        self.loss_sum += float(loss) * n
        self.correct += int((np.asarray(logits).argmax(axis=-1) == np.asarray(labels)).sum())
        self.count += n

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss_sum / self.count, "accuracy": self.correct / self.count}


def loss_fn(model: Classifier, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


@nnx.jit
def train_step(model: Classifier, optimizer: nnx.Optimizer, x, y):
    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, x, y)
    optimizer.update(grads)
    return loss, logits


@nnx.jit
def eval_step(model: Classifier, x, y):
    return loss_fn(model, x, y)


def evaluate(model: Classifier, x, y) -> tuple[dict[str, float], np.ndarray]:
    """Loss and accuracy on ``(x, y)`` with dropout off, and the predicted labels."""
    model.eval()
    metrics = Metrics()
    loss, logits = eval_step(model, x, y)
    metrics.update(loss=loss, logits=logits, labels=y)
    model.train()
    return metrics.compute(), np.asarray(logits).argmax(axis=-1)


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixels are 0..16
    y = digits.target.astype(np.int32)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify scikit-learn's digits with plait's scanned "
                                                 "Linear+Dropout stack; write a figure.")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training set (default: 30)")
    parser.add_argument("--depth", type=int, default=4, help="blocks in the scanned stack (default: 4)")
    parser.add_argument("--hidden", type=int, default=128, help="width of the blocks (default: 128)")
    parser.add_argument("--rate", type=float, default=0.1, help="dropout rate (default: 0.1)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the split and the shuffling")
    parser.add_argument("--figure", default="demo.png", help="where to write the figure (default: ./demo.png)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where to save checkpoints (default: a temporary directory, removed at the end)")
    parser.add_argument("--min-accuracy", type=float, default=0.95,
                        help="fail if the final test accuracy is lower (default: 0.95)")
    return parser.parse_args(argv)


def train(args: argparse.Namespace, checkpoint_dir: str) -> dict:
    from tqdm import tqdm

    x_train, x_test, y_train, y_test = load_data(args.seed)
    model = Classifier(args.depth, args.hidden, args.rate, nnx.Rngs(args.seed))
    optimizer = nnx.Optimizer(model, optax.adam(args.lr))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"digits: {len(x_train)} training and {len(x_test)} test images; model: {args.depth} scanned blocks "
          f"of width {args.hidden} (kernel {model.stack.linear.kernel.value.shape}), {n_params:,} parameters")

    order = np.random.default_rng(args.seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "test_loss": [], "test_accuracy": []}
    metrics = Metrics()
    save_every = max(1, args.epochs // 3)
    with nnx.checkpoints.CheckpointManager(checkpoint_dir, save_every=save_every, keep=2) as manager:
        bar = tqdm(range(1, args.epochs + 1), desc="epochs", unit="epoch")
        for epoch in bar:
            metrics.reset()
            perm = order.permutation(len(x_train))
            for start in range(0, len(perm) - args.batch_size + 1, args.batch_size):  # full batches: one compile
                idx = perm[start:start + args.batch_size]
                x, y = jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])
                loss, logits = train_step(model, optimizer, x, y)
                metrics.update(loss=loss, logits=logits, labels=y)
            train_metrics, (test_metrics, _) = metrics.compute(), evaluate(model, x_test, y_test)
            for k in ("loss", "accuracy"):
                history[k].append(train_metrics[k])
                history["test_" + k].append(test_metrics[k])
            bar.set_postfix(loss=f"{train_metrics['loss']:.3f}", acc=f"{train_metrics['accuracy']:.3f}",
                            test_acc=f"{test_metrics['accuracy']:.3f}")
            manager.save(epoch, force=epoch == args.epochs, model=model, optimizer=optimizer)
        bar.close()

        # A fresh model from the last checkpoint. Built abstractly (shapes only, no initial
        # weights are computed) and made concrete by restoring into it, in place.
        restored = nnx.eval_shape(lambda: Classifier(args.depth, args.hidden, args.rate, nnx.Rngs(0)))
        step = manager.restore(model=restored)
        saved_steps = manager.all_steps()

    test_accuracy = history["test_accuracy"][-1]
    restored_metrics, predictions = evaluate(restored, x_test, y_test)
    print(f"test accuracy {test_accuracy:.4f}")
    print(f"checkpoints kept: epochs {saved_steps}; restored epoch {step} into a fresh model: "
          f"test accuracy {restored_metrics['accuracy']:.4f}")
    assert restored_metrics["accuracy"] == test_accuracy, (restored_metrics, test_accuracy)
    return {"history": history, "test_accuracy": test_accuracy, "restored_accuracy": restored_metrics["accuracy"],
            "x_test": x_test, "y_test": y_test, "predictions": predictions, "restored_step": step}


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = result["history"]
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = plt.figure(figsize=(11, 5.4), dpi=80, layout="constrained")
    curves, digits = fig.subfigures(2, 1, height_ratios=[1.4, 1])
    for ax, (key, title) in zip(curves.subplots(1, 2), (("loss", "cross-entropy loss"), ("accuracy", "accuracy"))):
        ax.plot(epochs, history[key], label="train (dropout on)")
        ax.plot(epochs, history["test_" + key], label="test")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    x, y, pred = result["x_test"], result["y_test"], result["predictions"]
    # The first test digits, with the first few the model gets wrong among them.
    wrong = np.flatnonzero(pred != y)[:4]
    shown = np.sort(np.concatenate([wrong, np.setdiff1d(np.arange(len(y)), wrong)[:24 - len(wrong)]]))
    for ax, i in zip(digits.subplots(2, 12).ravel(), shown):
        ax.imshow(x[i].reshape(8, 8), cmap="gray_r")
        ax.set_title(f"{pred[i]}", color="tab:green" if pred[i] == y[i] else "tab:red", fontsize=12)
        ax.set_axis_off()
    curves.suptitle(f"plait: scikit-learn digits, test accuracy {result['test_accuracy']:.1%}")
    digits.suptitle("test digits and the predicted labels (red: wrong)", fontsize=11)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="plait-demo-") as directory:
            result = train(args, directory)
    else:
        result = train(args, os.path.abspath(args.checkpoint_dir))
    plot(result, args.figure)
    print(f"figure written to {args.figure}")
    if result["test_accuracy"] < args.min_accuracy:
        raise SystemExit(f"test accuracy {result['test_accuracy']:.4f} is below --min-accuracy {args.min_accuracy}")
    return result


if __name__ == "__main__":
    main()
