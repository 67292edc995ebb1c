"""`gpt-image-nodes serve` answers the seed's own curl example, byte for byte as documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SEED_CURL_BODY = """{
"model":"gpt-5.4-image-2",
"messages":[
{
"role":"user",
"content":"生成一只坐在月球上的橘猫,超写实风格"
}
]
}"""


def _command() -> list[str]:
    script = Path(sys.executable).with_name("gpt-image-nodes")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gpt_image_nodes.nodes.cli"]


@pytest.fixture
def served():
    proc = subprocess.Popen([*_command(), "serve", "--port", "0", "--key", "YOUR_API_KEY"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://[\d.]+:\d+", line)
        assert match, line
        yield match.group(0)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean stop, no traceback


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_curl_example(served):
    out = subprocess.run(
        ["curl", "-sS", f"{served}/v1/chat/completions",
         "-H", "Authorization: Bearer YOUR_API_KEY", "-H", "Content-Type: application/json",
         "-d", SEED_CURL_BODY],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    answer = json.loads(out)
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl_img_")
    part = answer["choices"][0]["message"]["content"][0]
    assert part["type"] == "image_base64" and part["image_base64"].startswith("iVBORw0KGgo")
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert set(answer["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_seed_wrong_key_is_refused_like_the_seed(served):
    import httpx

    r = httpx.post(f"{served}/v1/chat/completions", content=SEED_CURL_BODY.encode(),
                   headers={"Authorization": "Bearer nope", "Content-Type": "application/json"})
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "Invalid API key.", "type": "authentication_error", "code": "invalid_api_key"}}
