"""docs/tutorial.md, run as written: every ```bash block in order, in one shell, in an empty folder, against a real
gateway on a free port. The page cannot rot without this test failing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bastion.gateway.server import free_port

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    blocks = re.findall(r"```bash\n(.*?)```", TUTORIAL.read_text(), flags=re.S)
    assert len(blocks) == 7
    script = "\n".join(blocks).replace("8080", str(free_port()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ran = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", "trap 'kill ${SERVER:-} 2>/dev/null || true' EXIT\n" + script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    assert "gate failed: the model is not robust" in ran.stdout  # step 1: the undefended model fails its gate
    assert (tmp_path / "hardened-report" / "index.html").is_file() and (tmp_path / "hardened.safetensors").is_file()
    assert ran.stdout.strip().splitlines()[-2:][0].strip() == "401" or "\n401\n" in ran.stdout  # step 5
    bundle = json.loads((tmp_path / "intel.json").read_text())  # step 6: the probing key's inputs, shared
    assert any(o.get("pattern_type") == "bastion-simhash-1" for o in bundle["objects"])
    assert re.search(r"imported bundle \w+ from Digits team: [1-9]\d* input fingerprint", ran.stdout)
    audit = json.loads((tmp_path / "audit-report" / "results.json").read_text())
    assert audit["chain"]["intact"]
    (incident,) = [i for i in audit["incidents"] if i["kind"] == "probing"]
    assert incident["status"] == "resolved" and incident["acknowledged_by"] and incident["resolved_by"]
    assert [k["name"] for k in audit["keys"]["revoked"]] == ["app"]
    assert any(c["new"] == "under_attack" for c in audit["level_changes"])
