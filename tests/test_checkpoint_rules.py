"""What identifies a checkpoint and what lets one through, pinned rule by rule (a mutation round on
rerank_eval/models/checkpoint.py and weights_fit.py): the content hash's exact recipe, which of its
fields a cache key keeps, the oversized-file check over every file of a folder, and the bounds of
the config-against-weights and tokenizer-against-vocabulary checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from rerank_eval.errors import UserError
from rerank_eval.models import checkpoint
from rerank_eval.models.checkpoint import Checkpoint, folder_sha256, resolve_checkpoint
from rerank_eval.models.weights_fit import check_config_fits_weights, check_tokenizer_fits_config
from tests import builders


def _expected_sha256(folder: Path) -> str:
    """The documented recipe, written out: each file's relative path, a NUL, its bytes, in path order."""
    digest = hashlib.sha256()
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _model_folder(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["X"]}')
    (folder / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 5000)  # past one 1 MiB read
    return folder


def test_the_content_hash_is_paths_and_bytes_in_path_order(tmp_path):
    folder = _model_folder(tmp_path / "m")
    assert folder_sha256(folder) == _expected_sha256(folder)
    assert resolve_checkpoint(str(folder)).content_sha256 == _expected_sha256(folder)


def test_a_file_renamed_or_bytes_moved_between_files_is_another_checkpoint(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "a.txt").write_bytes(b"xy")
    (folder / "b.txt").write_bytes(b"z")
    before = folder_sha256(folder)
    (folder / "a.txt").write_bytes(b"x")
    (folder / "b.txt").write_bytes(b"yz")  # the same bytes in the same order, split elsewhere
    moved = folder_sha256(folder)
    (folder / "b.txt").rename(folder / "c.txt")
    renamed = folder_sha256(folder)
    assert len({before, moved, renamed}) == 3


def test_a_local_folder_is_identified_by_its_content_alone(tmp_path):
    """A copy elsewhere is the same model in a cache key; the manifest still names where it was."""
    one = _model_folder(tmp_path / "one")
    two = _model_folder(tmp_path / "elsewhere" / "two")
    first, second = resolve_checkpoint(str(one)), resolve_checkpoint(str(two))
    digest = _expected_sha256(one)
    assert first.identity() == {"source": str(one), "revision": None, "content_sha256": digest}
    assert first.key_identity() == {"revision": None, "content_sha256": digest}
    assert first.key_identity() == second.key_identity()
    assert first.revision is None and first.folder == one


def test_a_hub_checkpoint_is_identified_by_its_id_and_commit(hub_cache):
    """Two commits of one Hub model, or one commit of two models, never share a cache key."""
    one, other = "0" * 40, "1" * 40
    for commit in (one, other):
        for name in ("org/model", "org/other"):
            builders.put_in_hub_cache(hub_cache, name, "model", "config.json", b"{}", commit=commit)
    first = resolve_checkpoint("org/model", revision=one)
    assert first.identity() == {"source": "org/model", "revision": one, "content_sha256": None}
    assert first.key_identity() == first.identity()
    assert first.folder.name == one and (first.folder / "config.json").is_file()
    assert resolve_checkpoint("org/model", revision=other).key_identity()["revision"] == other
    assert resolve_checkpoint("org/other", revision=one).key_identity()["source"] == "org/other"


def test_a_sentence_transformers_folder_with_modules_json_alone_is_a_model_folder(tmp_path):
    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    assert resolve_checkpoint(str(folder)).content_sha256 == _expected_sha256(folder)


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # sparse: takes no disk
        handle.truncate(size)
    return path


def test_an_oversized_tokenizer_after_weights_and_a_dangling_link_is_refused(tmp_path, monkeypatch):
    """Every file is looked at: one that is no tokenizer or config (weights), or a dangling link
    sorted before the oversized file, ends nothing."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "special_tokens_map.json").symlink_to(tmp_path / "gone")
    _sparse(folder / "tokenizer.json", checkpoint.MAX_PARSED_FILE + 1)
    monkeypatch.setattr(checkpoint, "folder_sha256", lambda folder: "not hashed")
    with pytest.raises(UserError, match=r"tokenizer\.json holds 134,217,729 bytes"):
        resolve_checkpoint(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"tokenizer\.json holds 134,217,729 bytes"):
        resolve_checkpoint(str(folder))


def test_an_oversized_file_in_a_module_folder_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "modules.json").write_text("[]")
    _sparse(folder / "1_Pooling" / "config.json", checkpoint.MAX_PARSED_FILE + 1)
    monkeypatch.setattr(checkpoint, "folder_sha256", lambda folder: "not hashed")
    with pytest.raises(UserError) as refused:
        resolve_checkpoint(str(folder))
    assert str(refused.value) == (
        f"checkpoint {folder}: {Path('1_Pooling', 'config.json')} holds 134,217,729 bytes, more than "
        "134,217,728 (no tokenizer or config is that large)"
    )


def test_large_weights_and_a_tokenizer_of_the_largest_size_pass(tmp_path, monkeypatch):
    """The bound is on files that are parsed whole, and it is inclusive."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _sparse(folder / "model.safetensors", 4 * checkpoint.MAX_PARSED_FILE)
    _sparse(folder / "tokenizer.json", checkpoint.MAX_PARSED_FILE)
    (folder / "dir.json").mkdir()  # a folder named like a config is no file to measure
    monkeypatch.setattr(checkpoint, "folder_sha256", lambda folder: "not hashed")
    assert resolve_checkpoint(str(folder)).content_sha256 == "not hashed"


def test_an_oversized_file_of_a_hub_snapshot_is_refused(hub_cache):
    commit = "2" * 40
    builders.put_in_hub_cache(hub_cache, "org/huge", "model", "config.json", b"{}", commit=commit)
    snapshot = hub_cache / "models--org--huge" / "snapshots" / commit
    _sparse(snapshot / "tokenizer.json", checkpoint.MAX_PARSED_FILE + 1)
    with pytest.raises(UserError, match=r"^checkpoint org/huge: tokenizer\.json holds 134,217,729 bytes"):
        resolve_checkpoint("org/huge", revision=commit)


@pytest.mark.parametrize("name", ["a/b/c", "name", "org/", "/org/name-that-is-absent"])
def test_a_name_that_is_no_folder_and_no_org_name_id_is_refused(name):
    shown = str(Path(name).absolute())
    with pytest.raises(UserError) as refused:
        resolve_checkpoint(name)
    assert str(refused.value) == (
        f"model {name!r} is neither a checkpoint directory (no folder {shown}) nor a hub id (ORG/NAME)"
    )


def test_a_file_named_like_a_hub_id_is_refused_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").write_text("not a model")
    with pytest.raises(UserError) as refused:
        resolve_checkpoint("org/name")
    assert str(refused.value) == (
        f"model 'org/name' is neither a checkpoint directory ({tmp_path / 'org' / 'name'} is a file) "
        "nor a hub id (ORG/NAME)"
    )
    assert checkpoint.not_a_model_source("org/other") is None
    assert checkpoint.not_a_model_source(str(tmp_path)) is None


# --- weights_fit: the bounds of the two checks -------------------------------------------------


class _Two(torch.nn.Module):
    base_model_prefix = "body"

    def __init__(self, width: int = 3):
        super().__init__()
        self.first = torch.nn.Linear(2, width, bias=False)
        self.second = torch.nn.Linear(width, 2, bias=False)


def _weights(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def test_a_config_declaring_as_many_layers_as_tensors_passes_and_one_more_is_refused(tmp_path):
    folder = _weights(tmp_path / "w", {"first.weight": torch.zeros(3, 2), "second.weight": torch.zeros(2, 3)})
    check_config_fits_weights(folder, "s", SimpleNamespace(num_hidden_layers=2), lambda config: _Two())
    check_config_fits_weights(folder, "s", SimpleNamespace(n_layer=1, num_layers=2), lambda config: _Two())
    for key in ("num_hidden_layers", "num_layers", "n_layer"):
        with pytest.raises(UserError) as refused:
            check_config_fits_weights(folder, "s", SimpleNamespace(**{key: 3}), lambda config: _Two())
        assert (
            str(refused.value)
            == "checkpoint s: config.json declares 3 layers, but its weights hold 2 tensors in all"
        )


@pytest.mark.parametrize("stored", ["body.first.weight", "first.weight"])
def test_a_stored_tensor_is_matched_with_or_without_the_base_models_prefix(tmp_path, stored):
    """A bare model's weights under a head's prefix, or the reverse, are still compared by shape."""

    class Headed(torch.nn.Module):
        base_model_prefix = "body"

        def __init__(self):
            super().__init__()
            self.body = _Two(width=4)

    folder = _weights(tmp_path / "w", {stored: torch.zeros(3, 2)})
    build = (lambda config: _Two(width=4)) if stored.startswith("body.") else (lambda config: Headed())
    name = "first.weight" if stored.startswith("body.") else "body.first.weight"
    with pytest.raises(UserError) as refused:
        check_config_fits_weights(folder, "s", SimpleNamespace(), build)
    assert str(refused.value) == (
        f"checkpoint s: config.json makes {name} [4, 2] (8 values), but its weights hold {stored} as "
        "[3, 2] (6 values): are they of the same model?"
    )
    fitting = _weights(tmp_path / "fits", {stored: torch.zeros(4, 2)})
    check_config_fits_weights(fitting, "s", SimpleNamespace(), build)


def test_weights_of_no_tensor_of_the_model_are_refused_and_a_quantized_checkpoint_is_not_checked(tmp_path):
    folder = _weights(tmp_path / "w", {"other.weight": torch.zeros(3, 2)})
    with pytest.raises(UserError) as refused:
        check_config_fits_weights(folder, "s", SimpleNamespace(), lambda config: _Two())
    assert str(refused.value) == (
        "checkpoint s: none of its 1 stored tensors is one of the model its config.json builds (_Two): "
        "are they of the same model?"
    )
    packed = _weights(tmp_path / "q", {"first.weight": torch.zeros(1, 2)})
    check_config_fits_weights(packed, "s", SimpleNamespace(quantization_config={"bits": 4}), lambda c: _Two())


def test_a_tokenizer_of_half_the_vocabulary_passes_and_one_token_fewer_is_refused():
    tokenizer = ["t"] * 500
    check_tokenizer_fits_config(tokenizer, SimpleNamespace(vocab_size=1000), "s")
    check_tokenizer_fits_config(tokenizer, SimpleNamespace(), "s")  # no vocabulary: nothing to hold it to
    with pytest.raises(UserError) as refused:
        check_tokenizer_fits_config(tokenizer[:-1], SimpleNamespace(vocab_size=1000), "s")
    assert str(refused.value) == (
        "checkpoint s: its tokenizer holds 499 tokens for a vocabulary of 1,000: are its tokenizer "
        "files missing, or of another model?"
    )


def test_a_checkpoint_without_config_json_or_with_a_broken_one_is_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(UserError, match=r"^checkpoint org/m has no config\.json$"):
        Checkpoint(folder, "org/m", "c", None).config()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=rf"^cannot read {folder / 'config.json'}: "):
        Checkpoint(folder, "org/m", "c", None).config()
    (folder / "config.json").write_text(json.dumps({"architectures": ["A", 3, "B"], "auto_map": {"x": "y"}}))
    assert Checkpoint(folder, "org/m", "c", None).config()["architectures"] == ["A", 3, "B"]
    assert checkpoint.architectures(folder) == ["A", "B"] and checkpoint.ships_code(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": "A", "auto_map": {}}))
    assert checkpoint.architectures(folder) == [] and not checkpoint.ships_code(folder)
    (folder / "config.json").write_text("[1]")
    assert checkpoint.architectures(folder) == [] and not checkpoint.ships_code(folder)


def test_a_tokenizer_linked_to_a_device_is_refused_by_its_place_in_the_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").symlink_to("/dev/zero")
    monkeypatch.setattr(checkpoint, "folder_sha256", lambda folder: "not hashed")
    with pytest.raises(UserError) as refused:
        resolve_checkpoint(str(folder))
    assert str(refused.value).startswith(f"checkpoint {folder}: tokenizer.json is ")
    assert str(refused.value).endswith(", not a file")


def test_a_hub_model_fetches_only_its_model_files_at_the_revision_asked(tmp_path, monkeypatch):
    """Not every file of a repository (ONNX exports, pickled weights): only those a model is read from."""
    asked = []
    snapshot = tmp_path / ("3" * 40)
    snapshot.mkdir()

    def fake_snapshot(repo_id, patterns, revision=None):
        asked.append((repo_id, patterns, revision))
        return snapshot

    monkeypatch.setattr(checkpoint, "hub_snapshot", fake_snapshot)
    resolve_checkpoint("org/model", revision="v1")
    assert asked == [
        ("org/model", ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "merges.txt"], "v1")
    ]
