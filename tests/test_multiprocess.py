"""Two processes on localhost, 4 CPU devices each, one 8-device mesh (jax.distributed with
gloo collectives): examples/multihost.py trains the seed's stack FSDP-sharded and saves an
orbax checkpoint from both processes; a fresh pair restores it. Parameters equal the
one-device run."""

import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "multihost.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run_pair(*extra: str, timeout: float = 240) -> list[dict]:
    """Run the example as processes 0 and 1 of one job; their RESULTs. Both are killed
    whatever happens."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    port = _free_port()
    procs = []
    try:
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, str(EXAMPLE), "--layout", "fsdp", "--coordinator", f"localhost:{port}",
                 "--num-processes", "2", "--process-id", str(i), "--cpu-collectives", "gloo", *extra],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err[-4000:]
            results.append(json.loads([line for line in out.splitlines() if line.startswith("RESULT=")][-1][7:]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _single_device_run() -> dict:
    spec = importlib.util.spec_from_file_location("multihost_example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.train("single", steps=3)


def test_two_processes_train_like_one_device_and_share_a_checkpoint(tmp_path):
    pytest.importorskip("optax")
    pytest.importorskip("orbax.checkpoint")
    ckpt = str(tmp_path / "ckpt")
    trained = _run_pair("--steps", "3", "--checkpoint", ckpt)
    assert [r["process"] for r in trained] == [0, 1] and all(r["devices"] == 8 for r in trained)
    assert trained[0]["params"] == trained[1]["params"] and trained[0]["losses"] == trained[1]["losses"]
    for r in trained:
        assert r["specs"] == r["wanted"] and r["misplaced"] == []
    assert trained[0]["specs"]["blocks.linear.kernel"] == "(None, 'data', None)"

    single = _single_device_run()
    np.testing.assert_allclose(trained[0]["losses"], single["losses"], rtol=1e-5)
    for name, value in single["params"].items():
        np.testing.assert_allclose(trained[0]["params"][name], value, rtol=1e-5, atol=1e-6, err_msg=name)

    restored = _run_pair("--checkpoint", ckpt, "--restore")
    for r in restored:  # a fresh pair gets the trained parameters back, sharded the same way
        assert r["params"] == trained[0]["params"]
        assert r["specs"] == trained[0]["specs"] and r["misplaced"] == []
