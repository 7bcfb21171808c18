"""The seed model, end to end: a stack of Linear+Dropout blocks built with split_rngs + vmap,
applied with scan, trained a few steps with jit.

Run: python examples/demo.py
"""

import jax
import jax.numpy as jnp
import optax

import plait as nnx

WIDTH, DEPTH = 16, 4


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        return self.dropout(jax.nn.gelu(self.linear(x)))


class Model(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        @nnx.split_rngs(splits=DEPTH)
        @nnx.vmap(axis_size=DEPTH)
        def create_stack(rngs: nnx.Rngs):
            return Block(rngs)

        self.stack = create_stack(rngs)
        self.head = nnx.Linear(WIDTH, 1, rngs=rngs)

    def __call__(self, x):
        # Carry the RNG state through the layers so every layer draws its own mask.
        state_axes = nnx.StateAxes({nnx.RngState: nnx.Carry, ...: 0})

        @nnx.scan(in_axes=(nnx.Carry, state_axes), out_axes=nnx.Carry)
        def forward(x, block):
            return x + block(x)

        return self.head(forward(x, self.stack))


def main() -> None:
    model = Model(nnx.Rngs(0))
    print("The model (every Variable with its shape; the layer axis is the leading", DEPTH, "):")
    print(model)

    optimizer = nnx.Optimizer(model, optax.adam(1e-2))

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(model):
            return ((model(x) - y) ** 2).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(grads)
        return loss

    x = jax.random.normal(jax.random.key(1), (32, WIDTH))
    y = jnp.sin(x.sum(axis=1, keepdims=True))
    for step in range(1, 101):
        loss = train_step(model, optimizer, x, y)
        if step in (1, 10, 100):
            print(f"step {step:3d}  loss {float(loss):.4f}")

    model.eval()
    print("eval loss", float(((model(x) - y) ** 2).mean()))
    print("dropout draws so far:", int(model.stack.dropout.rngs.default.count.value))


if __name__ == "__main__":
    main()
