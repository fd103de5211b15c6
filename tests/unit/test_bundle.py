"""Model bundles: round trip, and a clear error for each kind of broken bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.asr.bundle import BundleError, build_model, load_bundle
from app.asr.bundle_files import EXPORTED_CARD_MARK
from app.asr.configs import default_config
from tests.support import make_random_bundle


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return make_random_bundle(tmp_path / "tiny")


def test_round_trip_gives_same_outputs(bundle_dir: Path) -> None:
    first, second = load_bundle(bundle_dir), load_bundle(bundle_dir)
    audio = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 12000])
    with torch.inference_mode():
        out1, len1 = first.model(*first.frontend(audio, lengths))
        out2, len2 = second.model(*second.frontend(audio, lengths))
    assert torch.equal(len1, len2) and torch.allclose(out1, out2)
    assert out1.shape == (2, 25, 29)


def _edit_config(path: Path, **changes: object) -> None:
    config = json.loads((path / "config.json").read_text())
    for dotted, value in changes.items():
        target = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            target = target[key]
        target[leaf] = value
    (path / "config.json").write_text(json.dumps(config))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "absent")


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "README.md"])
def test_missing_file(bundle_dir: Path, missing: str) -> None:
    (bundle_dir / missing).unlink()
    with pytest.raises(BundleError, match=f"missing {missing}"):
        load_bundle(bundle_dir)


def test_wrong_token_count(bundle_dir: Path) -> None:
    config = json.loads((bundle_dir / "config.json").read_text())
    _edit_config(bundle_dir, tokens=config["tokens"][:-1])
    with pytest.raises(BundleError, match="28 tokens but model.vocab_size is 29"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"frontend.n_mels": 64}, "frontend.n_mels 64 != model.n_mels 80"),
        ({"frame_rate": 50.0}, "frame_rate 50.0 disagrees"),
        ({"blank_id": 99}, "blank_id 99 is outside"),
        ({"model.blocks": []}, "model.blocks"),
        ({"frontend.normalization": "global"}, "global normalization needs mean"),
        ({"model.type": "transformer"}, "model: Input tag 'transformer' found using 'type'"),
        ({"format_version": 7}, "format_version 7 is not supported"),
    ],
)
def test_bad_config(bundle_dir: Path, changes: dict, message: str) -> None:
    _edit_config(bundle_dir, **changes)
    with pytest.raises(BundleError, match="invalid config.json") as err:
        load_bundle(bundle_dir)
    assert message in str(err.value)


def test_config_not_json(bundle_dir: Path) -> None:
    (bundle_dir / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)


def test_weights_that_do_not_match_the_config(bundle_dir: Path, tmp_path: Path) -> None:
    other = make_random_bundle(tmp_path / "other")
    _edit_config(other, **{"model.blocks": json.loads((other / "config.json").read_text())["model"]["blocks"][:2]})
    shutil.copy(bundle_dir / "model.safetensors", other / "model.safetensors")
    with pytest.raises(BundleError, match="weights do not match config.json"):
        load_bundle(other)


def test_weight_with_wrong_shape(bundle_dir: Path) -> None:
    state = load_file(str(bundle_dir / "model.safetensors"))
    state["head.weight"] = torch.zeros(5, 5, 1)
    save_file(state, str(bundle_dir / "model.safetensors"))
    with pytest.raises(BundleError, match="head.weight has shape"):
        load_bundle(bundle_dir)


def test_corrupt_weights(bundle_dir: Path) -> None:
    (bundle_dir / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="cannot read model.safetensors"):
        load_bundle(bundle_dir)


def test_shipped_default_bundle_loads() -> None:
    bundle = load_bundle(Path(__file__).resolve().parents[2] / "models" / "en-small")
    assert bundle.config.tokens[bundle.config.blank_id] == "<blank>"
    assert bundle.num_parameters() < 10_000_000


def test_with_stride_drops_the_last_strides_and_keeps_weight_shapes() -> None:
    config = default_config()
    halved = config.with_stride(2)
    assert [b.stride for b in halved.model.blocks][:2] == [2, 1]
    assert halved.frame_rate == 2 * config.frame_rate
    assert [b.stride for b in config.with_stride(1).model.blocks][:2] == [1, 1]
    _, model = build_model(config)
    _, restrided = build_model(halved)
    restrided.load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="not reachable"):
        config.with_stride(3)


def test_an_export_rewrites_its_own_card_and_keeps_an_edited_one(tmp_path: Path) -> None:
    folder = make_random_bundle(tmp_path / "tiny")  # a new folder: the card is README.md
    written = (folder / "README.md").read_text()
    assert written.startswith(EXPORTED_CARD_MARK) and "Randomly initialised" in written
    make_random_bundle(folder, name="again")  # its own card: rewritten
    assert "# again" in (folder / "README.md").read_text() and not (folder / "README.export.md").exists()
    (folder / "README.md").write_text("# tiny\n\nTest figures measured by hand.\n")  # edited
    make_random_bundle(folder, name="third")
    assert (folder / "README.md").read_text() == "# tiny\n\nTest figures measured by hand.\n"
    assert "# third" in (folder / "README.export.md").read_text()
    load_bundle(folder)
