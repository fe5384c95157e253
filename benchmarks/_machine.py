"""What the benchmarks print beside every figure: the machine they ran on."""

import platform
import subprocess


def cpu_name():
    """The CPU's model name from ``lscpu`` (figures differ between CPU families)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
