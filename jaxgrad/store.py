"""The results store: atomic writes, manifests, resumable sweeps.

One directory per experiment, ``<root>/<name>/``:

| file | what | in git |
|---|---|---|
| ``manifest.json`` | experiment, config, scale, seed, versions, devices, git commit, times, status, figures | yes |
| ``summary.csv`` | tidy table, one row per measured point | yes |
| ``comparisons.csv`` | measured against predicted, with the tolerance used | yes |
| ``<stem>.png``, ``<stem>.pdf`` | figures | yes |
| ``data.npz`` | the arrays ``plot`` reads (small), so ``jaxgrad figures`` works on a fresh clone | yes |
| ``points/<point id>.npz`` | one finished sweep point each | no |

Every file is written by `atomic_write` (temp file in the same directory, fsync,
`os.replace`), so a killed run never leaves a half-written file. A sweep point is
stored as soon as it finishes; running the experiment again with the same config and
seed computes only the missing points (``force=True`` recomputes everything). A file
that is there but cannot be read (truncated, corrupt) raises `UnreadableFileError`,
which names it; the runner then recomputes an unreadable point, and stops rather than
discard the points an unreadable manifest describes.

The study runner that fills a store (`experiments.runner`) lives with the studies;
this module never imports ``experiments`` nor the plotting code (`jaxgrad.plotting`
imports this module for `atomic_write`, never the reverse).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import json
import os
import platform
import re
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxgrad.stats import Comparison  # noqa: F401 (re-exported: the record a store holds)

if TYPE_CHECKING:  # this module does not import JAX (`point_key` does, when called)
    import jax

__all__ = [
    "Store",
    "UnreadableFileError",
    "atomic_write",
    "environment",
    "point_id",
    "point_key",
    "read_csv",
    "read_npz",
    "write_csv",
    "write_json",
    "write_npz",
]


# --------------------------------------------------------------------------- atomic files


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` to `path` atomically: temp file in the same directory, fsync, `os.replace`.

    If anything fails (or the process is killed) before the rename, the previous file,
    if any, is untouched and the temp file is removed (or, after a kill, left as a
    hidden ``.<name>.*.tmp`` that ``*.tmp`` in .gitignore hides).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_jsonable) + "\n")


def write_npz(path: str | os.PathLike[str], arrays: dict) -> Path:
    buffer = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buffer, **named)
    return atomic_write(path, buffer.getvalue())


class UnreadableFileError(Exception):
    """A stored file exists but cannot be read (truncated, corrupt): says which file and why.

    ``str(error)`` is one line: ``<path> is unreadable (<reason>)``, then ``; <remedy>``
    when the caller knows the way out (`with_remedy`).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, remedy: str = "") -> None:
        self.path, self.reason, self.remedy = Path(path), reason, remedy
        super().__init__(f"{path} is unreadable ({reason})" + (f"; {remedy}" if remedy else ""))

    def with_remedy(self, remedy: str) -> UnreadableFileError:
        return UnreadableFileError(self.path, self.reason, remedy)


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays stored in `path`.

    Raises:
      FileNotFoundError: no such file.
      UnreadableFileError: the file is there but is not a readable ``.npz`` (truncated, corrupt).
    """
    try:
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as f:  # our `with` closes a bad file too
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, RuntimeError) as error:
        raise UnreadableFileError(path, _reason(error)) from None


def write_csv(path: str | os.PathLike[str], rows: list[dict]) -> Path:
    """A tidy CSV: the union of the rows' keys as columns (first-seen order), blanks where absent."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _plain(v) for k, v in row.items()} for row in rows)
    return atomic_write(path, buffer.getvalue())


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def environment() -> dict:
    """Versions, backend, devices and git commit, for the manifest."""
    import jax
    import jaxlib
    import optax

    from jaxgrad import __version__

    return dict(
        versions=dict(
            jaxgrad=__version__,
            jax=jax.__version__,
            jaxlib=jaxlib.__version__,
            optax=optax.__version__,
            numpy=np.__version__,
            python=platform.python_version(),
        ),
        backend=jax.default_backend(),
        devices=[f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()],
        **_git_state(),
    )


def _git_state(directory=None) -> dict:
    """The commit checked out at `directory` (default: this package's) and whether its source differs.

    ``git_dirty`` describes the source tree only: changes to tracked files outside
    ``results/`` (the run being recorded rewrites those files itself, so counting
    them would mark every study after the first of a ``reproduce`` as dirty).
    """
    here = Path(__file__).resolve().parent if directory is None else Path(directory)

    def git(*args):
        return subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results")
        return dict(git_commit=git("rev-parse", "HEAD"), git_dirty=bool(changed))
    except (OSError, subprocess.SubprocessError):
        return dict(git_commit=None, git_dirty=None)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def point_id(point: dict) -> str:
    """A readable, filesystem-safe, stable name for a sweep point: ``k=v,k=v``."""
    text = ",".join(f"{k}={v}" for k, v in point.items())
    safe = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)
    if len(safe) > 120 or safe != text:
        safe = f"{safe[:100]}~{zlib.crc32(text.encode()):08x}"
    return safe


def point_key(seed: int, pid: str) -> jax.Array:
    """The PRNG key of a point: a function of (seed, point id) alone, not of sweep order."""
    import jax

    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(pid.encode()) & 0x7FFFFFFF)


@dataclasses.dataclass(frozen=True)
class Store:
    """The directory ``<root>/<name>/`` of one experiment's results."""

    dir: Path

    @classmethod
    def of(cls, root: str | os.PathLike[str], name: str) -> Store:
        return cls(Path(root) / name)

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def summary(self) -> Path:
        return self.dir / "summary.csv"

    @property
    def comparisons(self) -> Path:
        return self.dir / "comparisons.csv"

    @property
    def data(self) -> Path:
        return self.dir / "data.npz"

    @property
    def points(self) -> Path:
        return self.dir / "points"

    def point_path(self, pid: str) -> Path:
        return self.points / f"{pid}.npz"

    def read_manifest(self) -> dict | None:
        """The stored manifest, or None when there is none.

        Raises:
          UnreadableFileError: the file is there but is not a JSON object (truncated, corrupt).
        """
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
            raise UnreadableFileError(self.manifest, _reason(error)) from None
        if not isinstance(manifest, dict):
            raise UnreadableFileError(self.manifest, f"a JSON {type(manifest).__name__}, not an object")
        return manifest
