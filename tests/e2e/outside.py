"""How a user reaches the service from outside it: `distill run` in a folder of their files, and Python that
holds the third-party packages (torch, transformers, ...) but none of the service's, where a downloaded
student must run."""

import subprocess
import sys
import sysconfig
from pathlib import Path

# `-I -S` leaves out the working directory, the environment and the .pth files that put the project's own
# packages on the path; the site-packages folder then comes back alone, and the script checks the rest.
BARE_PYTHON_PREAMBLE = """\
import sys
sys.path.append({purelib!r})
try:
    import engine
    sys.exit("the project's packages are importable")
except ImportError:
    pass
"""


def distill_run(stack, folder: Path, job_lines: str) -> dict:
    """`distill run job.yaml -o out` in `folder`, the job file holding `job_lines`: the job it ran."""
    (folder / "job.yaml").write_text(job_lines)
    ran = subprocess.run(
        [sys.executable, "-m", "cli", "run", "job.yaml", "-o", "out"],
        cwd=folder,
        env={**stack.env, "DISTILL_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, f"{ran.stderr}\n{stack.logs()}"
    return stack.client.job(ran.stderr.split("submitted ")[1].split()[0])


def in_a_bare_python(script: str, *args: str, cwd: Path) -> str:
    """What `script` prints, run with `args` by a Python that has only the third-party packages."""
    preamble = BARE_PYTHON_PREAMBLE.format(purelib=sysconfig.get_paths()["purelib"])
    ran = subprocess.run(
        [sys.executable, "-I", "-S", "-c", preamble + script, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout
