# Running the installed `kdp` command as a user does: a subprocess, its exit
# status, stdout and stderr (the console script next to this Python, else PATH).
import os
import shutil
import subprocess
import sys

KDP = os.path.join(os.path.dirname(sys.executable), "kdp")
if not os.path.exists(KDP):
    KDP = shutil.which("kdp") or KDP


def kdp(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """`kdp ARGS...`; CompletedProcess with text stdout/stderr."""
    return subprocess.run([KDP, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def clean_error(r: subprocess.CompletedProcess) -> str:
    """The stderr of a failed command, checked to be a message, not a traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr
