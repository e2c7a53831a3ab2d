"""start.sh bringing up the real `strata serve` (tiny GGUF, real llama.cpp, kit LoRAs), and stopping it cleanly."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

CHAT = {"messages": [{"role": "user", "content": "What is a lease?"}], "max_tokens": 8, "temperature": 0.0}


def test_health_answers_and_missing_tools_are_logged(appliance) -> None:
    assert httpx.get(f"{appliance.url}/health", timeout=10).status_code == 200
    log = appliance.output()
    assert "sshd is not installed; skipping SSH." in log
    assert "ttyd is not installed; skipping the web terminal." in log
    assert f"strata serve is ready on http://127.0.0.1:{appliance.port}" in log


def test_chat_completion_works(appliance) -> None:
    reply = httpx.post(f"{appliance.url}/v1/chat/completions", json={"model": "local", **CHAT}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["completion_tokens"] > 0


def test_lora_paths_are_loaded_with_their_scales(appliance, lora_dirs: dict[str, Path]) -> None:
    listed = httpx.get(f"{appliance.url}/lora-adapters", timeout=10).json()
    scales = {item["path"]: item["scale"] for item in listed}
    assert scales == {str(lora_dirs["alpha"]): 1.0, str(lora_dirs["beta"]): 0.5}
    assert all(item["active"] for item in listed)
    # Applied, not just listed: clearing them changes the greedy reply; restoring them brings it back.
    url = f"{appliance.url}/v1/chat/completions"
    with_loras = httpx.post(url, json=CHAT, timeout=60).json()["choices"][0]["message"]["content"]
    cleared = httpx.post(f"{appliance.url}/lora-adapters", json={"adapters": []}, timeout=30)
    assert cleared.status_code == 200, cleared.text
    try:
        bare = httpx.post(url, json=CHAT, timeout=60).json()["choices"][0]["message"]["content"]
        assert bare != with_loras
    finally:
        restore = [{"path": str(lora_dirs["alpha"]), "scale": 1.0}, {"path": str(lora_dirs["beta"]), "scale": 0.5}]
        assert httpx.post(f"{appliance.url}/lora-adapters", json={"adapters": restore}, timeout=30).status_code == 200
    assert httpx.post(url, json=CHAT, timeout=60).json()["choices"][0]["message"]["content"] == with_loras


def test_head_check_on_chat_completions_answers(appliance) -> None:
    """Seed 003 §6: `curl -I .../v1/chat/completions` gives 200/404/405, not a hang."""
    url = f"{appliance.url}/v1/chat/completions"
    curl = shutil.which("curl")
    if curl:
        done = subprocess.run([curl, "-sI", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url],
                              capture_output=True, text=True, timeout=20)
        status = int(done.stdout)
    else:
        status = httpx.head(url, timeout=10).status_code
    assert status in (200, 404, 405)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_cleanly(launch, port_is_free, base_gguf: Path, sig: signal.Signals) -> None:
    served = launch({"MODEL_PATH": str(base_gguf), "N_CTX": "256", "N_THREADS": "1"})
    served.wait_ready()
    assert httpx.get(f"{served.url}/health", timeout=10).status_code == 200
    served.proc.send_signal(sig)
    assert served.proc.wait(timeout=30) == 0, served.output()
    log = served.output()
    assert f"received {sig.name}; stopping strata serve" in log
    assert f"strata serve stopped cleanly on {sig.name}." in log
    assert port_is_free(served.port)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{served.url}/health", timeout=2)


def test_api_key_from_the_environment_is_enforced(launch, base_gguf: Path) -> None:
    served = launch({"MODEL_PATH": str(base_gguf), "N_CTX": "256", "N_THREADS": "1", "API_KEY": "s3cret-key"})
    served.wait_ready()  # /health stays open, so start.sh's readiness probe needs no key
    url = f"{served.url}/v1/chat/completions"
    assert httpx.post(url, json=CHAT, timeout=30).status_code == 401
    authorized = httpx.post(url, json=CHAT, headers={"Authorization": "Bearer s3cret-key"}, timeout=60)
    assert authorized.status_code == 200, authorized.text
    assert "s3cret-key" not in served.output()
