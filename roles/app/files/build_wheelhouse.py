#!/usr/bin/env python3
"""Build the wheelhouse a target installs from with `pip --no-index`.

Runs on the controller, because targets may not reach (or trust) the package
index. The lock file's environment markers are evaluated for the *target's*
interpreter (pip would evaluate them for the controller's: Debian 12 runs
Python 3.11.2, where redis needs async-timeout and a newer controller
Python does not). The exact pins are then fetched with --no-deps for the
target's tags, next to the app's own wheel, built reproducibly.

Prints one JSON object: {"changed": bool, "release": id, "archive": file}.
The release id is a digest of every wheel and the requirements, so the same inputs give the same
id. The archive holds the wheels and requirements.txt, to ship in one transfer.
"""

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

# Source dirs and files that never belong in the app wheel.
IGNORED = {"build", "dist", "tests", "__pycache__", ".pytest_cache", ".ruff_cache", ".venv"}
# Fixed timestamp for the files inside the app wheel: same source, same bytes.
SOURCE_DATE_EPOCH = "315532800"


def target_environment(version: str, machine: str) -> dict:
    major, minor, _ = version.split(".")
    return {
        "implementation_name": "cpython",
        "implementation_version": version,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "python_full_version": version,
        "python_version": f"{major}.{minor}",
        "sys_platform": "linux",
    }


def pins_for(lock: Path, env: dict) -> list[str]:
    """The lock's requirements that apply to the target, markers dropped, hashes kept."""
    logical = lock.read_text().replace("\\\n", " ")
    pins = []
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        spec, *hashes = line.split(" --hash=")
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(env):
            pins.append(" ".join([f"{req.name}{req.specifier}", *(f"--hash={h.strip()}" for h in hashes)]))
    return sorted(pins)


def source_files(app: Path) -> list[Path]:
    files = []
    for path in sorted(app.rglob("*")):
        parts = set(path.relative_to(app).parts)
        if path.is_file() and not parts & IGNORED and not any(
            p.endswith(".egg-info") for p in parts
        ) and path.suffix != ".pyc":
            files.append(path)
    return files


def inputs_digest(app: Path, lock: Path, env: dict) -> str:
    digest = hashlib.sha256(json.dumps(env, sort_keys=True).encode())
    digest.update(lock.read_bytes())
    for path in source_files(app):
        digest.update(str(path.relative_to(app)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pip(*args: str, env: dict | None = None) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *args]
    result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")


def build(app: Path, pins: list[str], version: str, machine: str, glibc: str, out: Path) -> None:
    major, minor, _ = version.split(".")
    tag = f"cp{major}{minor}"
    # pip does not widen a PEP 600 tag to older glibc versions: list them all.
    glibc_minor = int(glibc.split(".")[1])
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, 4, -1)]
    platforms += [f"manylinux{legacy}_{machine}" for legacy in ("2014", "2010", "1")]
    requirements = out / "requirements.txt"
    requirements.write_text("\n".join(pins) + "\n")
    pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(out),
        "--python-version", version, "--implementation", "cp",
        "--abi", tag, "--abi", "abi3", "--abi", "none",
        *(f"--platform={platform}" for platform in platforms),
        "--requirement", str(requirements))
    with tempfile.TemporaryDirectory() as src:
        # Build from a clean copy so stale build/ output never ends up in the wheel.
        for path in source_files(app):
            dest = Path(src, path.relative_to(app))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
        pip("wheel", "--no-deps", "--wheel-dir", str(out), src,
            env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    # The target installs in hash-checking mode, the app's own wheel included.
    app_wheel = next(out.glob("chatstack-*.whl"))
    app_hash = hashlib.sha256(app_wheel.read_bytes()).hexdigest()
    with requirements.open("a") as file:
        file.write(f"./{app_wheel.name} --hash=sha256:{app_hash}\n")


def release_id(out: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([*out.glob("*.whl"), out / "requirements.txt"]):
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def rebuild(args, env: dict, out: Path, digest: str) -> None:
    """Build into a new directory, then put it in place of `out`."""
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=args.out))
    try:
        build(args.app.resolve(), pins_for(args.lock, env), args.python, args.machine,
              args.glibc, tmp)
    except BaseException:
        shutil.rmtree(tmp)
        raise
    with tarfile.open(tmp / "wheelhouse.tar", "w") as archive:
        for path in sorted(tmp.iterdir()):
            if path.name != "wheelhouse.tar":
                archive.add(path, arcname=path.name)
    (tmp / ".inputs").write_text(digest)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", type=Path, required=True, help="app source dir (pyproject.toml)")
    parser.add_argument("--lock", type=Path, required=True, help="universal lock file")
    parser.add_argument("--python", required=True, help="target Python, e.g. 3.11.2")
    parser.add_argument("--machine", default="x86_64", help="target platform_machine")
    parser.add_argument("--glibc", default="2.36", help="oldest target glibc, e.g. 2.36")
    parser.add_argument("--out", type=Path, required=True, help="parent dir of wheelhouses")
    args = parser.parse_args()

    env = target_environment(args.python, args.machine)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve() / f"cp{args.python}-{args.machine}"
    stamp = out / ".inputs"
    digest = inputs_digest(args.app.resolve(), args.lock.resolve(), env)
    # Runs of other scenarios or sites on this controller build the same
    # wheelhouse: the second waits, then finds it current.
    with (args.out / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        changed = not (stamp.exists() and stamp.read_text() == digest)
        if changed:
            rebuild(args, env, out, digest)
    print(json.dumps({
        "changed": changed,
        "release": release_id(out),
        "archive": str(out / "wheelhouse.tar"),
    }))


if __name__ == "__main__":
    main()
