"""Shell completions: generated scripts do not drift, and bash really completes queue names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from rq import Queue

from rqmaint.cli.completion import FILES, script
from tests import jobs
from tests.support import REPO_ROOT, process_env

COMPLETIONS = REPO_ROOT / "completions"


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_scripts_match_cli(shell):
    path = COMPLETIONS / FILES[shell]
    assert path.read_text(encoding="utf-8") == script(shell), (
        f"{path} drifted: run python -m rqmaint.cli.completion --write completions"
    )


def _complete_in_bash(line: str, redis_url: str, tmp_path: Path) -> list[str]:
    """Source completions/rqmaint.bash in a real bash and run its completion function on ``line``."""
    bash = shutil.which("bash")
    assert bash
    words = line.split(" ")
    program = (
        f"source {COMPLETIONS / 'rqmaint.bash'}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"_rqmaint_completion rqmaint\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = process_env(redis_url)  # the rqmaint installed next to this Python answers the script
    env["PATH"] = f"{Path(__import__('sys').executable).parent}:{env['PATH']}"
    done = subprocess.run(
        [bash, "--norc", "-c", program],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [x for x in done.stdout.splitlines() if x]


def test_bash_completes_commands_options_and_queue_names(client, redis_url, tmp_path):
    for name in ("default", "emails", "high"):
        Queue(name, connection=client).enqueue(jobs.add, 1, 1)
    assert _complete_in_bash("rqmaint re", redis_url, tmp_path) == ["requeue-abandoned"]
    assert "release" in _complete_in_bash("rqmaint lock ", redis_url, tmp_path)
    assert "--dry-run" in _complete_in_bash("rqmaint clean --d", redis_url, tmp_path)
    assert _complete_in_bash("rqmaint clean --queue ", redis_url, tmp_path) == ["default", "emails", "high"]
    assert _complete_in_bash("rqmaint lock release -q e", redis_url, tmp_path) == ["emails"]


def test_queue_completion_is_silent_without_redis(tmp_path):
    assert _complete_in_bash("rqmaint status -q ", "redis://127.0.0.1:1/0", tmp_path) == []
