import subprocess
import sys
from pathlib import Path

import yaml

from hypertweaks.cli import main


def flags(exp):
    return [
        "tune",
        "--model",
        exp["model"],
        "--train",
        exp["train"],
        "--validation",
        exp["validation"],
        "--test",
        exp["test"],
        "--runs-dir",
        exp["runs_dir"],
        "--name",
        "cli",
        "--max-length",
        "16",
        "--trials",
        "2",
        "--quiet",
    ]


def test_tune_from_flags(text_experiment, tmp_path, capsys):
    assert main(flags(text_experiment)) == 0
    out = capsys.readouterr().out
    assert "best recipe" in out and "test, best recipe" in out
    assert (tmp_path / "runs" / "cli" / "best" / "best.yaml").exists()


def test_tune_from_yaml_with_flags_overriding(text_experiment, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**text_experiment, "trials": 50, "name": "from-yaml"}))
    assert main(["tune", str(path), "--trials", "1"]) == 0
    assert "1 trials" in capsys.readouterr().out


def test_bad_input_is_a_clear_error_without_a_traceback(text_experiment, capsys):
    args = flags(text_experiment)
    args[args.index("--train") + 1] = "missing.csv"
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "error:" in out and "missing.csv' does not exist" in out and "Traceback" not in out


def test_console_script_is_installed():
    # the `hypertweaks` command pip installed beside this Python, not the module run by hand
    script = Path(sys.executable).parent / "hypertweaks"
    assert script.is_file(), f"no console script at {script}: pip install -e ."
    done = subprocess.run(
        [str(script), "tune", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--text-column" in done.stdout and "--timeout" in done.stdout


def test_llm_and_ray_flags_reach_the_experiment():
    from hypertweaks.cli import build_parser
    from hypertweaks.config import load_experiment

    args = build_parser().parse_args(
        ["tune", "--task", "causal-lm", "--model", "m", "--gguf-file", "m.Q4_1.gguf"]
        + ["--train", "t.jsonl", "--backend", "ray", "--ray-address", "auto"]
        + ["--cpus-per-trial", "2", "--gpus-per-trial", "0.5"]
    )
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    exp = load_experiment(None, overrides)
    assert (exp.gguf_file, exp.backend, exp.ray_address) == ("m.Q4_1.gguf", "ray", "auto")
    assert (exp.cpus_per_trial, exp.gpus_per_trial, exp.metric) == (2.0, 0.5, "loss")


def test_merge_refuses_a_folder_without_an_adapter(tmp_path, capsys):
    assert main(["merge", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    assert "holds no LoRA adapter" in " ".join(capsys.readouterr().out.split())
