"""Model artifacts on disk: `<models_dir>/<name>/<version>/` holding the model files and `metadata.json`.

The retraining job calls `save_artifact`; the daemon calls `newest_valid_artifact` at start and every
`models.reload`, and hands `Artifact.scorer_kwargs()` to `ForecastScorer`. Forecasters and seasonal profiles are
stored as JSON (their exact parameters and state), scikit-learn objects with joblib. `metadata.json` records the
version, creation time, training window, feature names, thresholds, validation figures, the caller's config and
data summary, the library versions, and a sha256 checksum per file. Loading checks every checksum before it
unpickles anything, then the library versions the pickles need, then the caller's expectations, and says exactly
what does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from predictor.detectors.forecast import DampedTrendForecaster
from predictor.detectors.forest import RolloutIsolationForest
from predictor.detectors.season import SeasonalProfile

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = 1
METADATA_FILE = "metadata.json"
REQUIRED_METADATA = ("training_window",)
"""Keys the caller must give `save_artifact`; `training_window` is {"start": seconds, "end": seconds}."""
OPTIONAL_METADATA = ("feature_names", "thresholds", "validation", "config", "data_summary")
PICKLE_COMPATIBILITY: Mapping[str, str] = {"python": "minor", "numpy": "major", "scikit-learn": "patch",
                                           "joblib": "major"}
"""How much of each library's version must match to unpickle (scikit-learn supports no unpickling across
versions, so the whole version). JSON files need no match: statsmodels only fitted the numbers in them."""
SEASON_PREFIX = "season/"
"""Artifact object keys of seasonal profiles start with this, so they never collide with a forecaster's key."""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VERSION = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d+))?$")


class ArtifactError(Exception):
    """An artifact that cannot be used; the message says which file or field and what does not match."""


@dataclass(frozen=True)
class Artifact:
    path: Path
    name: str
    version: str
    metadata: Mapping[str, Any]
    objects: Mapping[str, Any]

    def forecasters(self) -> dict[str, DampedTrendForecaster]:
        return {k: v for k, v in self.objects.items() if isinstance(v, DampedTrendForecaster)}

    def seasons(self) -> dict[str, SeasonalProfile]:
        """Seasonal profiles by `<namespace>/<name>:<metric>` (stored under SEASON_PREFIX + that key)."""
        return {k.removeprefix(SEASON_PREFIX): v for k, v in self.objects.items() if isinstance(v, SeasonalProfile)}

    def forest(self) -> RolloutIsolationForest | None:
        forests = [v for v in self.objects.values() if isinstance(v, RolloutIsolationForest)]
        return forests[0] if forests else None

    def scorer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `ForecastScorer`: the trained forecasters and seasonal profiles (by key) and the
        forest, if any."""
        return {"forecasters": self.forecasters(), "seasons": self.seasons(), "forest": self.forest()}


def library_versions() -> dict[str, str]:
    import scipy
    import sklearn
    import statsmodels

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "statsmodels": statsmodels.__version__,
        "joblib": joblib.__version__,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._") or "object"


def _jsonable(value: Any, where: str) -> Any:
    """Check that `value` survives JSON exactly (finite floats, str keys); return it unchanged."""
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: not JSON-serialisable: {exc}") from exc
    json.loads(text)
    return value


def _encode(key: str, obj: Any) -> tuple[str, bytes]:
    """(kind, file bytes) for one model object."""
    if isinstance(obj, DampedTrendForecaster):
        return "forecaster", json.dumps(obj.get_state(), allow_nan=False, indent=1).encode()
    if isinstance(obj, SeasonalProfile):
        return "season", json.dumps(obj.get_state(), allow_nan=False, indent=1).encode()
    if isinstance(obj, dict | list | str | int | float | bool):
        return "json", json.dumps(_jsonable(obj, f"model_objects[{key!r}]"), indent=1).encode()
    return "joblib", b""


def save_artifact(
    models_dir: str | Path,
    name: str,
    model_objects: Mapping[str, Any],
    metadata: Mapping[str, Any],
    *,
    created: float | None = None,
) -> Path:
    """Write `<models_dir>/<name>/<version>/` and return its path. The version is the creation time (UTC, to the
    second, `-2`, `-3`... when taken). Written into a hidden temporary directory and renamed, so a reader never
    sees half an artifact. Raises ValueError naming the bad argument."""
    if not _NAME.match(name):
        raise ValueError(f"name: expected lower-case letters, digits, '_', '.', '-', got {name!r}")
    if not model_objects:
        raise ValueError("model_objects: expected at least one model object")
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"metadata: missing {', '.join(missing)} (training_window is {{'start': s, 'end': s}})")
    unknown = [k for k in metadata if k not in REQUIRED_METADATA + OPTIONAL_METADATA]
    if unknown:
        raise ValueError(f"metadata: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(REQUIRED_METADATA + OPTIONAL_METADATA)})")
    window = metadata["training_window"]
    if not (isinstance(window, Mapping) and all(isinstance(window.get(k), int | float) for k in ("start", "end"))
            and window["start"] <= window["end"]):
        raise ValueError(f"metadata.training_window: expected {{'start': s, 'end': s}} with start <= end, "
                         f"got {window!r}")
    for key in OPTIONAL_METADATA:
        if key in metadata:
            _jsonable(metadata[key], f"metadata.{key}")
    created_at = time.time() if created is None else float(created)
    root = Path(models_dir) / name
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    version, n = stamp, 1
    while (root / version).exists():
        n += 1
        version = f"{stamp}-{n}"
    staging = root / f".{version}.tmp-{os.getpid()}"
    staging.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        used: set[str] = set()
        for i, (key, obj) in enumerate(model_objects.items()):
            kind, payload = _encode(key, obj)
            filename = f"{i:02d}-{_slug(key)}.{'joblib' if kind == 'joblib' else 'json'}"
            while filename in used:
                filename = f"{i:02d}-{_slug(key)}-{len(used)}.{filename.rsplit('.', 1)[1]}"
            used.add(filename)
            target = staging / filename
            if kind == "joblib":
                joblib.dump(obj, target)
            else:
                target.write_bytes(payload)
            files[key] = {"file": filename, "kind": kind, "type": f"{type(obj).__module__}.{type(obj).__qualname__}",
                          "sha256": _sha256(target), "bytes": target.stat().st_size}
        document = {
            "format": ARTIFACT_FORMAT,
            "name": name,
            "version": version,
            "created": datetime.fromtimestamp(created_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "created_seconds": created_at,
            "training_window": {"start": float(window["start"]), "end": float(window["end"])},
            **{key: metadata[key] for key in OPTIONAL_METADATA if key in metadata},
            "libraries": library_versions(),
            "objects": files,
        }
        (staging / METADATA_FILE).write_text(json.dumps(document, indent=1, sort_keys=True, allow_nan=False))
        staging.rename(root / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("saved model artifact %s (%d object(s))", root / version, len(files))
    return root / version


def _version_part(version: str, level: str) -> tuple[str, ...]:
    parts = version.split("+")[0].split(".")
    keep = {"major": 1, "minor": 2, "patch": 3}[level]
    return tuple(parts[:keep])


def load_artifact(path: str | Path, *, expect: Mapping[str, Any] | None = None) -> Artifact:
    """Load one artifact directory. Checks, in order: metadata, each file's sha256 (before anything is
    unpickled), the library versions the pickles need, then `expect` (metadata keys that must equal the given
    values, e.g. {"feature_names": [...]}). Raises ArtifactError saying exactly what does not match."""
    path = Path(path)
    where = str(path)
    try:
        metadata = json.loads((path / METADATA_FILE).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{where}: no {METADATA_FILE}") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{where}/{METADATA_FILE}: unreadable: {exc}") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != ARTIFACT_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ArtifactError(f"{where}/{METADATA_FILE}: format {found!r}, this version reads {ARTIFACT_FORMAT}")
    objects_meta = metadata.get("objects")
    if not isinstance(objects_meta, dict) or not objects_meta:
        raise ArtifactError(f"{where}/{METADATA_FILE}: no objects listed")
    for field in ("name", "version", "training_window", "libraries"):
        if field not in metadata:
            raise ArtifactError(f"{where}/{METADATA_FILE}: missing field {field!r}")
    for key, entry in objects_meta.items():
        filename = entry.get("file", "") if isinstance(entry, dict) else ""
        if not filename or "/" in filename or filename.startswith("."):
            raise ArtifactError(f"{where}: object {key!r} has no valid file name ({filename!r})")
        file = path / filename
        if not file.is_file():
            raise ArtifactError(f"{where}: {filename} (object {key!r}) is missing")
        actual = _sha256(file)
        if actual != entry.get("sha256"):
            raise ArtifactError(f"{where}: {filename} checksum mismatch: metadata says sha256 "
                                f"{entry.get('sha256')}, the file has {actual} (corrupted or modified)")
    if any(entry.get("kind") == "joblib" for entry in objects_meta.values()):
        _check_pickle_libraries(where, metadata["libraries"])
    for key, wanted in (expect or {}).items():
        if key not in metadata:
            raise ArtifactError(f"{where}: metadata has no {key!r}, expected {wanted!r}")
        if metadata[key] != wanted:
            raise ArtifactError(f"{where}: metadata {key} is {metadata[key]!r}, expected {wanted!r}")
    objects: dict[str, Any] = {}
    for key, entry in objects_meta.items():
        objects[key] = _load_object(path, key, entry)
    _check_feature_names(where, metadata, objects)
    return Artifact(path=path, name=str(metadata["name"]), version=str(metadata["version"]), metadata=metadata,
                    objects=objects)


def _check_pickle_libraries(where: str, saved: Any) -> None:
    if not isinstance(saved, dict):
        raise ArtifactError(f"{where}: metadata libraries is not a mapping")
    current = library_versions()
    for library, level in PICKLE_COMPATIBILITY.items():
        then, now = saved.get(library), current[library]
        if then is None:
            raise ArtifactError(f"{where}: metadata does not say which {library} saved the pickles")
        if _version_part(str(then), level) != _version_part(now, level):
            raise ArtifactError(f"{where}: saved with {library} {then}, this process has {now} "
                                f"(pickled models need the same {level} version)")


def _load_object(path: Path, key: str, entry: Mapping[str, Any]) -> Any:
    file = path / entry["file"]
    kind = entry.get("kind")
    try:
        if kind == "forecaster":
            return DampedTrendForecaster.from_state(json.loads(file.read_text()))
        if kind == "season":
            return SeasonalProfile.from_state(json.loads(file.read_text()))
        if kind == "json":
            return json.loads(file.read_text())
        if kind == "joblib":
            return joblib.load(file)  # checksum verified above: this is the file the job wrote
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: {entry['file']} (object {key!r}) does not load: {exc}") from exc
    raise ArtifactError(f"{path}: {entry['file']} (object {key!r}) has unknown kind {kind!r}")


def _check_feature_names(where: str, metadata: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    names = metadata.get("feature_names")
    if names is None:
        return
    for key, obj in objects.items():
        own = getattr(obj, "feature_names_in_", None)
        if own is not None and list(own) != list(names):
            raise ArtifactError(f"{where}: object {key!r} was fitted on features {list(own)!r}, metadata says "
                                f"{list(names)!r}")


def list_versions(models_dir: str | Path, name: str) -> list[Path]:
    """Version directories of `name`, newest first (hidden and foreign directories ignored)."""
    root = Path(models_dir) / name
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _VERSION.match(child.name)
        if child.is_dir() and match:
            found.append(((match.group(1), int(match.group(2) or 1)), child))
    return [p for _, p in sorted(found, reverse=True)]


def newest_valid_artifact(
    models_dir: str | Path, name: str, *, expect: Mapping[str, Any] | None = None
) -> Artifact | None:
    """The newest version of `name` that loads; versions that do not are skipped with a WARNING saying why."""
    for path in list_versions(models_dir, name):
        try:
            artifact = load_artifact(path, expect=expect)
        except ArtifactError as exc:
            log.warning("skipping model artifact: %s", exc)
            continue
        log.info("using model artifact %s (trained on %s .. %s)", path,
                 _fmt_time(artifact.metadata["training_window"].get("start")),
                 _fmt_time(artifact.metadata["training_window"].get("end")))
        return artifact
    return None


def _fmt_time(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "?"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
