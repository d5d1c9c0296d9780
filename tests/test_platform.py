"""hypertweaks on a system without POSIX file locks (Windows): the package imports, a tuned model
loads anywhere, and tuning says at once what it needs."""

import subprocess
import sys

WITHOUT_FCNTL = "import sys; sys.modules['fcntl'] = None\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_FCNTL + code], capture_output=True, text=True, timeout=300
    )


def test_the_package_imports_without_fcntl_and_tuning_names_what_it_needs(tmp_path):
    done = _python(
        "import hypertweaks\n"
        "from hypertweaks.checkpoints import BestCheckpoint\n"
        "try:\n"
        f"    BestCheckpoint(__import__('pathlib').Path({str(tmp_path)!r}), 'maximize')\n"
        "except hypertweaks.ConfigError as error:\n"
        "    print('refused:', error)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "refused: tuning needs a POSIX system" in done.stdout and "WSL" in done.stdout
