"""Wall time of `stackwise validate FILE` as a user runs it (a fresh process each time), and whether it imports torch.

    python benchmarks/validate_speed.py [CONFIG] [--runs 10]

Prints one JSON object. Target (issue #2): median under 0.35 s on a 2-core machine, torch not imported.
`python -c pass` is timed in the same run as a baseline, since these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "examples" / "starter.yaml"))
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    exe = shutil.which("stackwise") or str(Path(sys.executable).with_name("stackwise"))
    wall([exe, "validate", args.config], 2)  # warm the file cache
    validate = wall([exe, "validate", args.config], args.runs)
    baseline = wall([sys.executable, "-c", "pass"], args.runs)
    probe = (
        "import sys; from stackwise.cli import app; from typer.testing import CliRunner; "
        f"r = CliRunner().invoke(app, ['validate', {args.config!r}]); print('torch' in sys.modules)"
    )
    torch_imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
    print(
        json.dumps(
            {
                "benchmark": "stackwise validate, one file, fresh process",
                "config": str(Path(args.config)),
                "runs": args.runs,
                "median_s": round(statistics.median(validate), 4),
                "min_s": round(min(validate), 4),
                "max_s": round(max(validate), 4),
                "python_startup_median_s": round(statistics.median(baseline), 4),
                "target_s": 0.35,
                "meets_target": statistics.median(validate) < 0.35,
                "torch_imported": torch_imported == "True",
                "torch_installed": importlib.util.find_spec("torch") is not None,
                "machine": f"{_cpu_name()}, {os.cpu_count()} cores",
                "python": platform.python_version(),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
