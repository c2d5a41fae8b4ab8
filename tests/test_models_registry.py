"""The model registry says what each model is, keeps old names as aliases, and turns a name
that names nothing into one clear error, offline and without calling transformers."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from click.testing import CliRunner
from test_record import save_tiny_model, tiny_loaded

from brainalign.cli import main
from brainalign.models import registry
from brainalign.models.registry import (ALIASES, DEFAULT_CAUSAL_MODEL, DEFAULT_ENCODER_MODEL,
                                        REGISTRY, UnknownModelError, canonical_name,
                                        is_installed, list_models, load_model, registry_spec)

OLD_NAMES = {"smollm2-135m": "smollm2-135m-instruct-q4",
             "minilm-l6": "minilm-l6-sentence-f32",
             "gemma3-270m": "gemma3-270m-base-q4km"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny Llama checkpoint folder standing in for a registry model's files."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny_model(tmp_path_factory.mktemp("tiny-registry-llama"))
    torch.set_num_threads(threads)


@pytest.fixture
def no_transformers_loading(monkeypatch):
    """Fail the test if transformers is asked to load anything, or the hub is probed twice."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError(f"transformers was called with {args} {kwargs}")

    for auto in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", refuse)
    monkeypatch.setattr(registry, "_load_checkpoint", refuse)
    probes = []

    def probe(host, timeout_s):
        probes.append(host)
        assert len(probes) == 1, "the hub reachability probe ran more than once"
        return False  # the hub is unreachable

    monkeypatch.setattr(registry, "_probe_hub", probe)
    monkeypatch.setattr(registry, "_hub_reachable", None)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return probes


def test_names_state_variant_and_quantisation():
    assert DEFAULT_CAUSAL_MODEL == "smollm2-135m-instruct-q4"
    assert DEFAULT_ENCODER_MODEL == "minilm-l6-sentence-f32"
    smollm, minilm, gemma = (REGISTRY[n] for n in OLD_NAMES.values())
    assert (smollm.variant, minilm.variant, gemma.variant) == ("instruct", "sentence-embedding",
                                                               "base")
    assert smollm.quantisation.startswith("GGUF Q4_1")
    assert gemma.quantisation.startswith("GGUF Q4_K_M")
    assert minilm.quantisation.startswith("none") and "float32" in minilm.quantisation
    assert smollm.hf_id.endswith("-Instruct") and not gemma.hf_id.endswith("-it")


def test_aliases_resolve_to_the_same_spec(caplog):
    assert ALIASES == OLD_NAMES
    for alias, name in OLD_NAMES.items():
        assert REGISTRY[alias] is REGISTRY[name]
        assert alias not in REGISTRY  # the registry's keys are the current names only
        assert canonical_name(alias) == name and canonical_name(name) == name
        assert is_installed(alias) == is_installed(name)
    registry._ALIAS_NOTED.discard("smollm2-135m")
    with caplog.at_level(logging.WARNING, logger="brainalign.models.registry"):
        assert registry_spec("smollm2-135m") is REGISTRY["smollm2-135m-instruct-q4"]
        assert registry_spec("smollm2-135m") is REGISTRY["smollm2-135m-instruct-q4"]
        assert registry_spec("smollm2-135m-instruct-q4") is REGISTRY["smollm2-135m-instruct-q4"]
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["smollm2-135m is an alias of smollm2-135m-instruct-q4 "
                     "(SmolLM2-135M-Instruct, GGUF Q4_1)"]
    assert registry_spec("not-a-model") is None


def test_list_models_rows_carry_variant_and_quantisation():
    rows = {row["name"]: row for row in list_models()}
    assert set(rows) == set(OLD_NAMES.values())
    for alias, name in OLD_NAMES.items():
        row = rows[name]
        assert row["aliases"] == [alias]
        assert row["variant"] == REGISTRY[name].variant
        assert row["quantisation"] == REGISTRY[name].quantisation
        assert isinstance(row["installed"], bool) and row["hf_id"] == REGISTRY[name].hf_id
    assert rows[DEFAULT_CAUSAL_MODEL]["default"] == "causal"


def test_models_command_shows_aliases_variant_and_quantisation():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    for alias, name in OLD_NAMES.items():
        spec = REGISTRY[name]
        for text in (name, alias, spec.variant, spec.quantisation, spec.hf_id):
            assert text in result.output
    assert "installed" in result.output


def test_provenance_records_alias_and_canonical_name(monkeypatch, tiny_dir):
    monkeypatch.setattr(registry, "locate", lambda spec: tiny_dir)
    by_alias = load_model("smollm2-135m")
    by_name = load_model("smollm2-135m-instruct-q4")
    spec = REGISTRY["smollm2-135m-instruct-q4"]
    for loaded in (by_alias, by_name):
        assert loaded.provenance["canonical_name"] == spec.name
        assert loaded.provenance["variant"] == "instruct"
        assert loaded.provenance["quantisation"] == spec.quantisation
        assert loaded.provenance["source"] == "registry"
    assert by_alias.provenance["alias_used"] == "smollm2-135m"
    assert by_alias.provenance["model_id"] == "smollm2-135m"  # recordings keyed on it stay valid
    assert "alias_used" not in by_name.provenance


@pytest.mark.parametrize("name", ["smollm3", "gpt2", "smollm2-135M", "some-org/no-such-model",
                                  "./no/such/dir", "~/no-such-model.gguf"])
def test_unknown_name_fails_at_once_without_transformers(no_transformers_loading, name):
    started = time.perf_counter()
    with pytest.raises(UnknownModelError) as caught:
        load_model(name)
    assert time.perf_counter() - started < 5  # loose: a hub retry loop would take ~30 s
    message = str(caught.value)
    assert "\n" not in message and repr(name) in message
    for registry_name, alias in ((n, a) for a, n in OLD_NAMES.items()):
        assert registry_name in message and alias in message
    assert "local transformers checkpoint directory" in message and "hub id" in message
    assert len(no_transformers_loading) <= 1


def test_path_like_names_say_no_such_directory(no_transformers_loading, tmp_path):
    with pytest.raises(UnknownModelError, match="no such directory"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(UnknownModelError, match="without config.json"):
        load_model(str(tmp_path))
    assert no_transformers_loading == []  # decided without the network


def test_offline_environment_skips_the_probe(no_transformers_loading, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match="network access"):
        load_model("some-org/no-such-model")
    assert no_transformers_loading == []


def test_offline_hub_id_in_the_local_cache_loads_local_files_only(monkeypatch, tiny_dir):
    calls = []

    def fake_load(directory, gguf_file, kind, dtype, local_files_only=False):
        calls.append((directory, local_files_only))
        loaded = tiny_loaded("llama")
        return loaded.model, loaded.tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(registry, "_in_hf_cache", lambda repo_id: True)
    monkeypatch.setattr(registry, "_load_checkpoint", fake_load)
    loaded = load_model("some-org/cached-model", kind="causal")
    assert calls == [("some-org/cached-model", True)]
    assert loaded.provenance["source"] == "hub"
    assert loaded.provenance["hf_id"] == "some-org/cached-model"


def test_record_cli_prints_the_error_without_traceback(no_transformers_loading, tmp_path):
    result = CliRunner().invoke(main, ["record", "--model", "smollm3", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert result.output.startswith("Error: model 'smollm3' is not in the registry")
    assert "Traceback" not in result.output and result.output.count("\n") == 1
    assert "smollm2-135m-instruct-q4" in result.output
    assert not isinstance(result.exception, UnknownModelError)  # turned into a click error


@pytest.mark.slow
def test_installed_smollm2_loads_by_alias_and_by_name():
    from conftest import model_or_skip

    by_alias = model_or_skip("smollm2-135m")
    by_name = model_or_skip("smollm2-135m-instruct-q4")
    assert by_alias.provenance["file_sha256"] == by_name.provenance["file_sha256"]
    assert by_alias.provenance["alias_used"] == "smollm2-135m"
    assert by_name.provenance["canonical_name"] == "smollm2-135m-instruct-q4"
    for a, b in zip(by_alias.model.parameters(), by_name.model.parameters()):
        assert torch.equal(a, b)


def test_a_split_gguf_is_joined_again_when_its_parts_change(tmp_path, monkeypatch):
    """New parts of the same total size (a re-quantised package) give a new joined file;
    unchanged parts reuse the joined one."""
    import os
    import sys

    from brainalign.models.registry import ModelSpec, locate

    monkeypatch.setenv("BRAINALIGN_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    parts = []
    for index in range(2):
        package = site / f"fake_gguf_part{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        parts.append(package / "data" / f"m.gguf.part{index}")
        parts[-1].write_bytes(bytes([index]) * 8)
    monkeypatch.syspath_prepend(str(site))
    sys.modules.pop("fake_gguf_part0", None)
    spec = ModelSpec(name="fake", kind="causal", architecture="llama", hf_id="x/y",
                     packages=("fake-part0", "fake-part1"),
                     modules=("fake_gguf_part0", "fake_gguf_part1"), relative_path="m.gguf",
                     description="", variant="base", quantisation="",
                     gguf_parts=("data/m.gguf.part0", "data/m.gguf.part1"))
    joined = locate(spec)
    assert joined.read_bytes() == bytes([0]) * 8 + bytes([1]) * 8
    stamp = joined.stat().st_mtime_ns
    assert locate(spec) == joined and joined.stat().st_mtime_ns == stamp  # reused
    parts[1].write_bytes(bytes([7]) * 8)  # same size, new contents
    later = parts[1].stat().st_mtime_ns + 10**9
    os.utime(parts[1], ns=(later, later))
    assert locate(spec).read_bytes() == bytes([0]) * 8 + bytes([7]) * 8
