"""Installed size of the images' Python packages: the full lock (pipeline image) vs the serving lock (the bento).

Measured, not estimated from download sizes: for every distribution a lock pins, the files its
RECORD lists (what the installer wrote, compiled bytecode included) are stat'ed in this venv,
which installed requirements.lock with pip, as the images do. Sizes are bytes on disk before
any image compression; the base image (python:3.11-slim) and the fusionrec wheel come on top of both.

    python -m benchmarks.image_size [--out-dir DIR] [--top 12]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from tools.serving_lock import FULL_LOCK, SERVING_LOCK, read_lock

from benchmarks.report import write_report

MB = 1_000_000
# Distributions of NVIDIA's CUDA runtime (and the compiler torch pulls in with it): a GPU-only part
# of the set, reported apart because the service runs on CPU.
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def installed_bytes(name: str) -> tuple[int, int]:
    """(bytes, files) of one installed distribution, summed over the files its RECORD lists.

    Raises:
        LookupError: the distribution is not installed here, or has no RECORD.
    """
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise LookupError(f"{name} is not installed in this environment: install requirements.lock first") from None
    if dist.files is None:
        raise LookupError(f"{name} has no RECORD: its installed files cannot be listed")
    total = count = 0
    for entry in dist.files:
        path = Path(str(dist.locate_file(entry)))
        if path.is_file():
            total, count = total + path.stat().st_size, count + 1
    return total, count


def measure(lock: Path) -> dict[str, Any]:
    """Package count, files, installed MB and the per-distribution sizes of one lock."""
    pins = read_lock(lock)
    sizes = {name: installed_bytes(name) for name in pins}
    total = sum(b for b, _ in sizes.values())
    cuda = sum(b for name, (b, _) in sizes.items() if name.startswith(CUDA_PREFIXES))
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1][0])
    return {
        "lock": lock.name,
        "packages": len(pins),
        "files": sum(n for _, n in sizes.values()),
        "installed_mb": round(total / MB, 1),
        "cuda_runtime_mb": round(cuda / MB, 1),
        "by_package_mb": {name: round(b / MB, 2) for name, (b, _) in ranked},
    }


def markdown(full: dict[str, Any], serving: dict[str, Any], top: int) -> str:
    saved = full["installed_mb"] - serving["installed_mb"]
    dropped = sorted(set(full["by_package_mb"]) - set(serving["by_package_mb"]),
                     key=lambda n: -full["by_package_mb"][n])
    lines = [
        "# Image size: installed Python packages\n",
        "Sum of the files each distribution's RECORD lists, as installed by pip in this venv "
        "(uncompressed; the base image and the fusionrec wheel come on top of both).\n",
        "| lock | image | packages | files | installed MB | of which CUDA runtime MB |",
        "|---|---|---|---|---|---|",
        f"| `{full['lock']}` | pipeline (`components/Dockerfile`); the bento before | {full['packages']} | "
        f"{full['files']:,} | {full['installed_mb']:,.1f} | {full['cuda_runtime_mb']:,.1f} |",
        f"| `{serving['lock']}` | serving (the bento, `serving/bentofile.yaml`) | {serving['packages']} | "
        f"{serving['files']:,} | {serving['installed_mb']:,.1f} | {serving['cuda_runtime_mb']:,.1f} |",
        f"\nThe serving image carries {saved:,.1f} MB ({saved / full['installed_mb']:.0%}) and "
        f"{full['packages'] - serving['packages']} packages less.\n",
    ]
    for title, data in ((f"Largest packages of `{full['lock']}`", full), (f"Largest packages of `{serving['lock']}`",
                                                                         serving)):
        lines += [f"## {title}\n", "| package | MB |", "|---|---|"]
        lines += [f"| {name} | {mb:,.1f} |" for name, mb in list(data["by_package_mb"].items())[:top]]
        lines.append("")
    lines += ["## Largest packages left out of the serving image\n", "| package | MB |", "|---|---|"]
    lines += [f"| {name} | {full['by_package_mb'][name]:,.1f} |" for name in dropped[:top]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--top", type=int, default=12, help="how many of the largest packages to list")
    args = parser.parse_args(argv)
    full, serving = measure(FULL_LOCK), measure(SERVING_LOCK)
    missing = set(serving["by_package_mb"]) - {canonicalize_name(n) for n in full["by_package_mb"]}
    if missing:
        raise SystemExit(f"{SERVING_LOCK.name} names packages {FULL_LOCK.name} does not: {sorted(missing)}")
    data = {"full": full, "serving": serving,
            "saved_mb": round(full["installed_mb"] - serving["installed_mb"], 1)}
    paths = write_report("image_size", data, markdown(full, serving, args.top), args.out_dir)
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
