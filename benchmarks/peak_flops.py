"""This machine's measured float32 peak: a large matmul in TensorFlow (own process), the
physical limit the training step's achieved GFLOP/s is judged against. Prints JSON."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer


def main(
    n: Annotated[int, typer.Option(help="Square matrices of this size.")] = 2048,
    repeats: Annotated[int, typer.Option(help="Timed matmuls (the best of them counts).")] = 10,
) -> None:
    """Best-of-``repeats`` GFLOP/s of an n x n float32 matmul (2 n^3 FLOPs)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2), dtype=tf.float32)
    b = tf.random.stateless_uniform((n, n), seed=(3, 4), dtype=tf.float32)
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul().numpy()
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"peak_matmul_n": n, "peak_matmul_s": best, "peak_gflops": 2 * n**3 / best / 1e9,
                      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}))


if __name__ == "__main__":
    typer.run(main)
