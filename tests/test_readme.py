"""The README's "Your own model and data" section runs as written, so its examples cannot rot.

Every fenced block of the section is used, in order, in one empty folder:
- a block whose first line is a comment naming a file (`# mynets.py`, `# mine.yaml`) is written to that file;
- any other python block runs as a script (`python block.py`; one block = one complete program);
- a bash block runs line by line (`progdistill ...` as `python -m progdistill ...`).
A python block that imports a package that is not installed (an optional extra) skips the rest.
"""

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Your own model and data"


def section_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return re.findall(r"^```(\w*)\n(.*?)^```", text[start:end if end > 0 else None], re.S | re.M)


def missing_imports(code: str, local: set[str]) -> list[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names - local if importlib.util.find_spec(n) is None)


def test_the_own_model_and_data_section_runs_as_written(tmp_path):
    blocks = section_blocks()
    assert [lang for lang, _ in blocks][:4] == ["python", "python", "yaml", "bash"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    local: set[str] = set()

    def run(command: list[str], what: str) -> None:
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README block {what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    for i, (lang, code) in enumerate(blocks):
        named = re.fullmatch(r"#\s*([\w.-]+\.\w+)", code.splitlines()[0].strip())
        if named:
            (tmp_path / named.group(1)).write_text(code)
            local.add(named.group(1).rsplit(".", 1)[0])
        elif lang == "python":
            missing = missing_imports(code, local)
            if missing:
                pytest.skip(f"README block {i} needs {', '.join(missing)} (an optional extra)")
            (tmp_path / f"readme_block_{i}.py").write_text(code)
            run([sys.executable, f"readme_block_{i}.py"], str(i))
        elif lang in ("bash", "sh", "shell"):
            for line in code.splitlines():
                line = line.split(" #")[0].strip()
                if not line or line.startswith("#"):
                    continue
                words = shlex.split(line)
                command = [sys.executable, "-m", "progdistill", *words[1:]] if words[0] == "progdistill" else \
                    ["bash", "-c", line]
                run(command, f"{i}: {line}")
    # what the first example promises
    assert (tmp_path / "runs/python/teacher/checkpoint-600/meta.json").read_text().count('"mynets:Net"') == 1
    assert len((tmp_path / "runs/python/progressive/metrics.jsonl").read_text().splitlines()) == 7
    assert (tmp_path / "runs/mine/report.md").is_file()
    assert list((tmp_path / "runs/mine/students/adaptive/budget-300/seed-0/tensorboard").glob("events.out.tfevents.*"))
