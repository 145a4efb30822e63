"""The layout's promises (issue 34): training code never loads the tooling, and the plug-ins load no K-Bot code."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLING = (
    "ksim_entropy.bridge",
    "ksim_entropy.sim2real",
    "ksim_entropy.deploy",
    "ksim_entropy.cli",
    "ksim_entropy.testing",
)


def loaded_by(code: str) -> list[str]:
    script = f"import json, sys; {code}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('ksim_'))))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_the_kbot_loads_no_tooling():
    modules = loaded_by("import ksim_entropy.kbot.walk, ksim_entropy.ppo.mixins, ksim_entropy.ppo.recurrent")
    assert "ksim_entropy.kbot.walk" in modules and "ksim_entropy.ppo.mixins" in modules
    assert [m for m in modules if m.startswith(TOOLING)] == []


def test_the_ksim_plug_ins_and_the_mixins_load_no_kbot_code():
    modules = loaded_by(
        "import ksim_entropy.randomization, ksim_entropy.curriculum, ksim_entropy.observation, "
        "ksim_entropy.actuation, ksim_entropy.events, ksim_entropy.rewards, ksim_entropy.terminations, "
        "ksim_entropy.ppo.mixins, ksim_entropy.ppo.recurrent"
    )
    assert "ksim_entropy.ppo.mixins" in modules
    assert [m for m in modules if m.startswith((*TOOLING, "ksim_entropy.kbot"))] == []
