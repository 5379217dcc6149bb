"""Translations: the bundled ComfyUI layouts, matching, selection, and every mistake in a file."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import InvalidInputError, TranslationError
from reconciler.loaders import schema_text
from reconciler.model import KNOWN_KINDS, ModelType
from reconciler.naming import check_relpath
from reconciler.translation_files import load_translations, read_translation, translation_problems
from reconciler.translations import (
    EXTRA_KINDS,
    LinkScope,
    LinkWant,
    Match,
    Rule,
    Translation,
    links_for,
    range_rank,
    rule_kinds,
    select,
)
from reconciler.versions import parse_range

REPO = Path(__file__).resolve().parent.parent
USER, BUNDLED = load_translations([])
CURRENT = select([], BUNDLED, "comfyui", "default", "0.3.62")
LEGACY = select([], BUNDLED, "comfyui", "default", "0.2.6")


def links(
    t: Translation,
    kind: str,
    files: list[str],
    *,
    type: str = "diffusion",
    family: str = "sdxl",
    tags: tuple[str, ...] = (),
    name: str = "model",
) -> tuple[LinkWant, ...]:
    return links_for(
        t, type=type, family=family, kind=kind, tags=tags, files=files, cleaned_name=name
    )


def folders(wants: tuple[LinkWant, ...]) -> list[str]:
    return [w.folder for w in wants]


# --- the bundled ComfyUI translations ----------------------------------------------------------

# kind, type, file, folder under >=0.2.7, folder under <0.2.7 (None: no such folder then)
COMFY_FOLDERS = [
    ("checkpoint", "diffusion", "sd_xl_base_1.0.safetensors", "checkpoints", "checkpoints"),
    ("lora", "diffusion", "my_lora.safetensors", "loras", "loras"),
    ("vae", "diffusion", "sdxl_vae.safetensors", "vae", "vae"),
    ("text_encoder", "diffusion", "t5xxl_fp16.safetensors", "text_encoders", "clip"),
    ("diffusion_model", "diffusion", "flux1-dev.safetensors", "diffusion_models", "unet"),
    ("clip_vision", "vision", "clip_vision_g.safetensors", "clip_vision", "clip_vision"),
    ("style_model", "diffusion", "flux1-redux-dev.safetensors", "style_models", "style_models"),
    ("embedding", "diffusion", "easynegative.pt", "embeddings", "embeddings"),
    ("diffusers", "diffusion", "model_index.json", "diffusers", "diffusers"),
    ("vae_approx", "diffusion", "taesdxl_decoder.pth", "vae_approx", "vae_approx"),
    ("controlnet", "diffusion", "control_canny.safetensors", "controlnet", "controlnet"),
    ("gligen", "diffusion", "gligen_sd14_textbox_pruned.safetensors", "gligen", "gligen"),
    ("upscaler", "vision", "4x-UltraSharp.pth", "upscale_models", "upscale_models"),
    ("latent_upscaler", "diffusion", "hunyuan_upscaler.safetensors", "latent_upscale_models", None),
    ("hypernetwork", "diffusion", "hn.pt", "hypernetworks", "hypernetworks"),
    ("photomaker", "diffusion", "photomaker-v1.bin", "photomaker", "photomaker"),
    ("classifier", "other", "aesthetic", "classifiers", "classifiers"),
    ("model_patch", "diffusion", "qwen_image_patch.safetensors", "model_patches", None),
    ("audio_encoder", "audio", "wav2vec2.safetensors", "audio_encoders", None),
]
# Folders in docs/comfyui-folders.md that are not model folders, or are newer than this translation.
NOT_COVERED = {
    "custom_nodes", "datasets", "configs",
    "background_removal", "frame_interpolation", "geometry_estimation", "optical_flow", "detection",
}  # fmt: skip


def doc_folders() -> set[str]:
    text = (REPO / "docs" / "comfyui-folders.md").read_text(encoding="utf-8")
    table = text.split("## Folder table", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| ([a-z_]+) \| ", table, re.MULTILINE)}


def test_the_table_covers_every_model_folder_in_the_research_notes() -> None:
    listed = doc_folders()
    assert len(listed) > 20, "the folder table in docs/comfyui-folders.md was not found"
    assert {row[3] for row in COMFY_FOLDERS} == listed - NOT_COVERED


@pytest.mark.parametrize(("kind", "type_", "file", "current", "legacy"), COMFY_FOLDERS)
def test_each_kind_goes_to_its_comfyui_folder(
    kind: str, type_: str, file: str, current: str, legacy: str | None
) -> None:
    now = links(CURRENT, kind, [file], type=type_)
    assert folders(now) == [current]
    old = links(LEGACY, kind, [file], type=type_)
    assert folders(old) == ([] if legacy is None else [legacy])


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.3.62", "comfyui_0.2.7_default.json"),
        ("0.2.7", "comfyui_0.2.7_default.json"),
        ("1.0.0", "comfyui_0.2.7_default.json"),
        ("0.2.6", "comfyui_0.0.1_default.json"),
        ("0.1.0", "comfyui_0.0.1_default.json"),
        ("0.0.1", "comfyui_0.0.1_default.json"),
        ("v0.3.0", "comfyui_0.2.7_default.json"),
    ],
)
def test_bundled_selection_by_version(version: str, expected: str) -> None:
    chosen = select(USER, BUNDLED, "comfyui", "default", version)
    assert chosen.source.endswith("/" + expected)


@pytest.mark.parametrize(
    ("kind", "files", "expected"),
    [
        # weights by every supported extension, in any case
        ("lora", ["a.safetensors", "b.ckpt", "c.pt", "d.pt2", "e.bin", "f.pth", "g.pkl", "h.sft"],
         ["a.safetensors", "b.ckpt", "c.pt", "d.pt2", "e.bin", "f.pth", "g.pkl", "h.sft"]),
        ("lora", ["Big.SafeTensors"], ["Big.SafeTensors"]),
        # what ComfyUI would not list is not linked
        ("lora", ["my_lora.safetensors", "README.md", "preview.png", "notes.txt"], ["my_lora.safetensors"]),
        ("lora", ["README.md"], []),
        ("checkpoint", ["x.onnx"], []),
    ],
)  # fmt: skip
def test_only_files_comfyui_lists_are_linked(
    kind: str, files: list[str], expected: list[str]
) -> None:
    assert sorted(w.name for w in links(CURRENT, kind, files)) == sorted(expected)


def test_a_readme_in_a_lora_model_gets_no_link() -> None:
    wants = links(CURRENT, "lora", ["my_lora.safetensors", "README.md"])
    assert wants == (LinkWant("my_lora.safetensors", "loras", "my_lora.safetensors"),)


def test_pt2_is_only_linked_for_versions_that_read_it() -> None:
    assert folders(links(CURRENT, "lora", ["x.pt2"])) == ["loras"]
    assert links(LEGACY, "lora", ["x.pt2"]) == ()


def test_diffusers_bundle_links_the_model_folder_once() -> None:
    files = [
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    ]
    for t in (CURRENT, LEGACY):
        wants = links(t, "diffusers", files, name="sdxl_base_1.0")
        assert wants == (LinkWant(None, "diffusers", "sdxl_base_1.0"),)


def test_diffusers_folder_without_model_index_is_not_linked() -> None:
    # ComfyUI lists only folders holding a model_index.json.
    assert links(CURRENT, "diffusers", ["unet/diffusion_pytorch_model.safetensors"]) == ()


def test_checkpoint_config_yaml_goes_to_configs() -> None:
    wants = links(CURRENT, "checkpoint", ["v1-inference.yaml", "sd15.ckpt"])
    assert wants == (
        LinkWant("sd15.ckpt", "checkpoints", "sd15.ckpt"),
        LinkWant("v1-inference.yaml", "configs", "v1-inference.yaml"),
    )


@pytest.mark.parametrize(
    ("t", "kind", "type_", "expected"),
    [
        (CURRENT, "gguf", "diffusion", ["diffusion_models"]),
        (LEGACY, "gguf", "diffusion", ["unet"]),
        (CURRENT, "gguf", "llm", []),  # an LLM in GGUF is not a ComfyUI model
        (CURRENT, "diffusion_model", "diffusion", ["diffusion_models"]),
        (CURRENT, "text_encoder", "llm", ["text_encoders"]),
        (LEGACY, "text_encoder", "llm", ["clip"]),
    ],
)
def test_gguf_files(t: Translation, kind: str, type_: str, expected: list[str]) -> None:
    assert folders(links(t, kind, ["flux1-dev-Q4_K_S.gguf"], type=type_)) == expected


def test_files_in_subfolders_keep_their_path_and_link_by_base_name() -> None:
    wants = links(CURRENT, "text_encoder", ["text_encoder_2/model.safetensors"])
    assert wants == (
        LinkWant("text_encoder_2/model.safetensors", "text_encoders", "model.safetensors"),
    )


def test_unknown_kinds_get_no_links() -> None:
    assert links(CURRENT, "other", ["x.safetensors"]) == ()
    assert links(CURRENT, "no_such_kind", ["x.safetensors"]) == ()


def test_every_known_kind_but_other_has_a_rule() -> None:
    assert rule_kinds([CURRENT]) >= set(KNOWN_KINDS) - {"other"}


def test_extra_kinds_are_the_bundled_kinds_beyond_known_kinds() -> None:
    assert rule_kinds(BUNDLED) - set(KNOWN_KINDS) == set(EXTRA_KINDS)


@pytest.mark.parametrize("t", BUNDLED, ids=lambda t: t.source.rsplit("/", 1)[-1])
def test_bundled_file_names_follow_the_convention(t: Translation) -> None:
    name = t.source.rsplit("/", 1)[-1]
    app, version, variant = name.removesuffix(".json").split("_")
    assert (app, variant) == (t.app, t.variant)
    assert t.versions.contains(version), f"{name}: its own version is outside {t.versions}"
    assert t.source.startswith("<bundled>/translations/")
    assert t.description


def test_bundled_files_are_valid_against_the_schema_on_disk() -> None:
    from jsonschema import Draft202012Validator

    schema = json.loads(schema_text("translation"))
    Draft202012Validator.check_schema(schema)
    for path in sorted((REPO / "translations").glob("*.json")):
        assert list(Draft202012Validator(schema).iter_errors(json.loads(path.read_text()))) == []
    assert len(BUNDLED) == len(list((REPO / "translations").glob("*.json")))


def test_validate_finds_no_problem_in_the_bundled_files() -> None:
    assert translation_problems([]) == []


# --- the other bundled apps: A1111, Forge, SwarmUI, LM Studio, llama.cpp -----------------------

# file name -> (app, a version it must be chosen for, a source its description must cite);
# docs/app-folders.md explains each layout
OTHER_APPS = {
    "a1111_1.0.0_default.json": ("a1111", "1.10.1", "bef51aed032c0aaa5cfd80445bc4cf0d85b408b5"),
    "forge_0.0.1_default.json": ("forge", "0.0.17", "lllyasviel/stable-diffusion-webui-forge"),
    "forge_2.0.0_default.json": ("forge", "2.0.1", "dfdcbab685e57677014f05a3309b48cc87383167"),
    "swarmui_0.5.0_default.json": ("swarmui", "0.9.2", "mcmonkeyprojects/SwarmUI"),
    "swarmui_0.9.3_default.json": (
        "swarmui",
        "0.9.8.2",
        "062407c7bb488fc76ac61044cb929f0d0a30e60f",
    ),
    "lmstudio_0.2.0_default.json": ("lmstudio", "0.3.20", "lmstudio-ai/docs"),
    "llamacpp_0_default.json": ("llamacpp", "0", "common/preset.cpp"),
}


def bundled(name: str) -> Translation:
    (t,) = [t for t in BUNDLED if t.source == "<bundled>/translations/" + name]
    return t


A1111 = bundled("a1111_1.0.0_default.json")
FORGE1 = bundled("forge_0.0.1_default.json")
FORGE2 = bundled("forge_2.0.0_default.json")
SWARM_OLD = bundled("swarmui_0.5.0_default.json")
SWARM = bundled("swarmui_0.9.3_default.json")
LMSTUDIO = bundled("lmstudio_0.2.0_default.json")
LLAMACPP = bundled("llamacpp_0_default.json")


@pytest.mark.parametrize("name", sorted(OTHER_APPS))
def test_each_new_app_file_is_bundled_valid_and_cites_its_sources(name: str) -> None:
    from jsonschema import Draft202012Validator

    path = REPO / "translations" / name
    schema = json.loads(schema_text("translation"))
    assert list(Draft202012Validator(schema).iter_errors(json.loads(path.read_text()))) == []
    t = bundled(name)
    app, _, source = OTHER_APPS[name]
    assert (t.app, t.variant) == (app, "default")
    assert source in t.description, f"{name} does not cite {source}"


@pytest.mark.parametrize("name", sorted(OTHER_APPS))
def test_each_app_id_selects_its_file(name: str) -> None:
    app, version, _ = OTHER_APPS[name]
    assert select(USER, BUNDLED, app, "default", version).source.endswith("/" + name)


@pytest.mark.parametrize(
    ("app", "version", "expected"),
    [
        ("a1111", "1.0.0", "a1111_1.0.0_default.json"),
        ("a1111", "1.5.2", "a1111_1.0.0_default.json"),
        ("forge", "0.0.1", "forge_0.0.1_default.json"),
        ("forge", "1.0.2", "forge_0.0.1_default.json"),
        ("forge", "1.99", "forge_0.0.1_default.json"),
        ("forge", "2.0.0", "forge_2.0.0_default.json"),
        ("forge", "2.1", "forge_2.0.0_default.json"),
        ("swarmui", "0.6.5", "swarmui_0.5.0_default.json"),
        ("swarmui", "0.9.2.2", "swarmui_0.5.0_default.json"),
        ("swarmui", "0.9.3", "swarmui_0.9.3_default.json"),
        ("swarmui", "0.9.3.0", "swarmui_0.9.3_default.json"),
        ("swarmui", "0.9.4.1", "swarmui_0.9.3_default.json"),
        ("lmstudio", "0.2.31", "lmstudio_0.2.0_default.json"),
        ("lmstudio", "0.4.13", "lmstudio_0.2.0_default.json"),
        ("llamacpp", "7000", "llamacpp_0_default.json"),
    ],
)
def test_version_boundaries_of_the_new_apps(app: str, version: str, expected: str) -> None:
    assert select(USER, BUNDLED, app, "default", version).source.endswith("/" + expected)


def test_the_new_apps_are_named_when_an_app_is_unknown() -> None:
    with pytest.raises(TranslationError) as caught:
        select(USER, BUNDLED, "automatic1111", "default", "1.10.1")
    for app in ("a1111", "comfyui", "forge", "llamacpp", "lmstudio", "swarmui"):
        assert app in str(caught.value)


# kind, type, file, folder (None: A1111 has no folder for it)
A1111_FOLDERS = [
    ("checkpoint", "diffusion", "sd_xl_base_1.0.safetensors", "models/Stable-diffusion"),
    ("checkpoint", "diffusion", "v1-5-pruned-emaonly.ckpt", "models/Stable-diffusion"),
    ("checkpoint", "diffusion", "v1-5-pruned-emaonly.yaml", "models/Stable-diffusion"),
    ("lora", "diffusion", "my_lora.safetensors", "models/Lora"),
    ("lora", "diffusion", "old_lora.pt", "models/Lora"),
    ("vae", "diffusion", "sdxl_vae.safetensors", "models/VAE"),
    ("embedding", "diffusion", "easynegative.safetensors", "embeddings"),
    ("embedding", "diffusion", "bad_prompt.pt", "embeddings"),
    ("hypernetwork", "diffusion", "hn.pt", "models/hypernetworks"),
    ("upscaler", "vision", "4x-UltraSharp.pth", "models/ESRGAN"),
    ("controlnet", "diffusion", "control_v11p_sd15_canny.pth", "models/ControlNet"),
    ("ipadapter", "diffusion", "ip-adapter_sd15.bin", "models/ControlNet"),
    # what A1111 would not list
    ("upscaler", "vision", "4x-UltraSharp.safetensors", None),
    ("hypernetwork", "diffusion", "hn.safetensors", None),
    ("embedding", "diffusion", "preview.png", None),
    ("text_encoder", "diffusion", "t5xxl_fp16.safetensors", None),
    ("diffusion_model", "diffusion", "flux1-dev.safetensors", None),
    ("gguf", "diffusion", "flux1-dev-Q8_0.gguf", None),
    ("vae_approx", "diffusion", "vaeapprox-sdxl.pt", None),
    ("clip_vision", "vision", "clip_vision_g.safetensors", None),
    ("diffusers", "diffusion", "model_index.json", None),
]


@pytest.mark.parametrize(("kind", "type_", "file", "folder"), A1111_FOLDERS)
def test_each_kind_goes_to_its_a1111_folder(
    kind: str, type_: str, file: str, folder: str | None
) -> None:
    assert folders(links(A1111, kind, [file], type=type_)) == ([] if folder is None else [folder])


def test_webui_models_dir_is_the_data_folder_so_embeddings_sit_beside_models() -> None:
    for t in (A1111, FORGE1, FORGE2):
        targets = {target for rule in t.rules for target in rule.targets}
        assert "embeddings" in targets
        assert all(f == "embeddings" or f.startswith("models/") for f in targets)


# kind, type, file, folder under Forge <2, folder under Forge >=2 (None: not read)
FORGE_FOLDERS = [
    ("checkpoint", "diffusion", "sd_xl_base_1.0.safetensors", "models/Stable-diffusion", "models/Stable-diffusion"),
    ("checkpoint", "diffusion", "sd15.yaml", "models/Stable-diffusion", None),
    ("checkpoint", "diffusion", "flux1-dev-bnb-nf4.gguf", None, "models/Stable-diffusion"),
    ("diffusion_model", "diffusion", "flux1-dev.safetensors", None, "models/Stable-diffusion"),
    ("gguf", "diffusion", "flux1-dev-Q8_0.gguf", None, "models/Stable-diffusion"),
    ("gguf", "llm", "llama-3.2-1b-Q4_K_M.gguf", None, None),
    ("text_encoder", "diffusion", "t5xxl_fp8_e4m3fn.safetensors", None, "models/text_encoder"),
    ("text_encoder", "diffusion", "t5-v1_1-xxl-encoder-Q8_0.gguf", None, "models/text_encoder"),
    ("vae", "diffusion", "ae.safetensors", "models/VAE", "models/VAE"),
    ("vae", "diffusion", "ae.gguf", None, "models/VAE"),
    ("lora", "diffusion", "my_lora.safetensors", "models/Lora", "models/Lora"),
    ("embedding", "diffusion", "easynegative.safetensors", "embeddings", "embeddings"),
    ("upscaler", "vision", "4x-UltraSharp.pth", "models/ESRGAN", "models/ESRGAN"),
    ("upscaler", "vision", "4x-UltraSharp.safetensors", None, "models/ESRGAN"),
    ("controlnet", "diffusion", "control_canny.safetensors", "models/ControlNet", "models/ControlNet"),
    ("controlnet", "diffusion", "control_lllite.patch", "models/ControlNet", "models/ControlNet"),
    ("ipadapter", "diffusion", "ip-adapter_sd15.safetensors", "models/ControlNet", "models/ControlNet"),
    ("hypernetwork", "diffusion", "hn.pt", None, None),
    ("clip_vision", "vision", "clip_vision_g.safetensors", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "type_", "file", "old", "new"), FORGE_FOLDERS)
def test_each_kind_goes_to_its_forge_folder(
    kind: str, type_: str, file: str, old: str | None, new: str | None
) -> None:
    assert folders(links(FORGE1, kind, [file], type=type_)) == ([] if old is None else [old])
    assert folders(links(FORGE2, kind, [file], type=type_)) == ([] if new is None else [new])


# kind, type, file, folder under SwarmUI <0.9.3, folder under >=0.9.3 (None: not read)
SWARM_FOLDERS = [
    ("checkpoint", "diffusion", "sd_xl_base_1.0.safetensors", "Stable-Diffusion", "Stable-Diffusion"),
    ("checkpoint", "diffusion", "legacy.ckpt", "Stable-Diffusion", "Stable-Diffusion"),
    ("checkpoint", "diffusion", "flux1-dev-Q8_0.gguf", None, None),  # rejected there by SwarmUI
    ("diffusion_model", "diffusion", "flux1-dev.safetensors", "unet", "diffusion_models"),
    ("diffusion_model", "diffusion", "flux1-dev.sft", "unet", "diffusion_models"),
    ("diffusion_model", "diffusion", "flux1-dev-Q8_0.gguf", None, "diffusion_models"),
    ("gguf", "diffusion", "flux1-dev-Q8_0.gguf", None, "diffusion_models"),
    ("gguf", "llm", "llama-3.2-1b-Q4_K_M.gguf", None, None),
    ("lora", "diffusion", "my_lora.safetensors", "Lora", "Lora"),
    ("vae", "diffusion", "ae.safetensors", "VAE", "VAE"),
    ("embedding", "diffusion", "easynegative.safetensors", "Embeddings", "Embeddings"),
    ("text_encoder", "diffusion", "t5xxl_fp16.safetensors", "clip", "clip"),
    ("text_encoder", "diffusion", "t5-v1_1-xxl-encoder-Q8_0.gguf", None, "clip"),
    ("clip_vision", "vision", "clip_vision_g.safetensors", "clip_vision", "clip_vision"),
    ("controlnet", "diffusion", "control_canny.safetensors", "controlnet", "controlnet"),
    ("model_patch", "diffusion", "z_image_controlnet.safetensors", None, "model_patches"),
    ("upscaler", "vision", "4x-UltraSharp.pth", "upscale_models", "upscale_models"),
    ("latent_upscaler", "diffusion", "hunyuan_upscaler.safetensors", None, "latent_upscale_models"),
    ("ipadapter", "diffusion", "ip-adapter_sd15.safetensors", "ipadapter", "ipadapter"),
    ("style_model", "diffusion", "flux1-redux-dev.safetensors", None, "style_models"),
    ("gligen", "diffusion", "gligen_sd14_textbox_pruned.safetensors", "gligen", "gligen"),
    ("hypernetwork", "diffusion", "hn.pt", "hypernetworks", "hypernetworks"),
    ("vae_approx", "diffusion", "taesdxl_decoder.pth", None, None),
    ("diffusers", "diffusion", "model_index.json", None, None),
    ("lora", "diffusion", "README.md", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "type_", "file", "old", "new"), SWARM_FOLDERS)
def test_each_kind_goes_to_its_swarmui_folder(
    kind: str, type_: str, file: str, old: str | None, new: str | None
) -> None:
    assert folders(links(SWARM_OLD, kind, [file], type=type_)) == ([] if old is None else [old])
    assert folders(links(SWARM, kind, [file], type=type_)) == ([] if new is None else [new])


def test_lmstudio_links_gguf_files_under_publisher_and_model_folders() -> None:
    files = [
        "Qwen2.5-VL-7B-Instruct-Q4_K_M.gguf",
        "mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf",
        "README.md",
        "config.json",
    ]
    wants = links(LMSTUDIO, "gguf", files, type="llm", family="qwen", name="qwen2.5-vl-7b")
    assert wants == (
        LinkWant(files[0], "qwen/qwen2.5-vl-7b", files[0]),
        LinkWant(files[1], "qwen/qwen2.5-vl-7b", files[1]),
    )
    # exactly two folder levels below LM Studio's models folder, as LM Studio requires
    assert all(len(PurePosixPath(w.folder).parts) == 2 for w in wants)


@pytest.mark.parametrize(
    ("kind", "type_", "file", "folder"),
    [
        ("gguf", "llm", "Llama-3.2-3B-Instruct-Q4_K_M.gguf", "llama/llama-3.2-3b"),
        ("gguf", "embedding", "nomic-embed-text-v1.5.Q8_0.gguf", "llama/llama-3.2-3b"),
        ("gguf", "llm", "model.safetensors", None),
        ("gguf", "diffusion", "flux1-dev-Q8_0.gguf", None),
        ("diffusion_model", "diffusion", "flux1-dev.gguf", None),
        ("checkpoint", "diffusion", "sd_xl_base_1.0.safetensors", None),
    ],
)
def test_lmstudio_places_only_gguf_language_and_embedding_models(
    kind: str, type_: str, file: str, folder: str | None
) -> None:
    wants = links(LMSTUDIO, kind, [file], type=type_, family="llama", name="llama-3.2-3b")
    assert folders(wants) == ([] if folder is None else [folder])


def test_lmstudio_folders_follow_each_models_family_and_name() -> None:
    # the filled-in folder is remembered per rule; a second model must not get the first's folder
    a = links(LMSTUDIO, "gguf", ["a.gguf"], type="llm", family="qwen", name="model-a")
    b = links(LMSTUDIO, "gguf", ["a.gguf"], type="llm", family="qwen", name="model-b")
    c = links(LMSTUDIO, "gguf", ["a.gguf"], type="llm", family="gemma", name="model-a")
    assert folders(a) == ["qwen/model-a"]
    assert folders(b) == ["qwen/model-b"]
    assert folders(c) == ["gemma/model-a"]


def test_llamacpp_links_every_gguf_of_a_model_into_one_folder_named_after_it() -> None:
    shards = [f"Kimi-K2-UD-IQ1_S-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    wants = links(LLAMACPP, "gguf", [*shards, "README.md"], type="llm", name="kimi-k2-iq1")
    assert wants == tuple(LinkWant(s, "kimi-k2-iq1", s) for s in shards)
    vision = ["gemma-3-4b-it-Q8_0.gguf", "mmproj-F16.gguf"]
    wants = links(LLAMACPP, "gguf", vision, type="llm", family="gemma", name="gemma-3-4b")
    assert folders(wants) == ["gemma-3-4b", "gemma-3-4b"]
    embed = links(LLAMACPP, "gguf", ["e.gguf"], type="embedding", name="nomic-embed")
    assert folders(embed) == ["nomic-embed"]
    assert links(LLAMACPP, "gguf", ["flux1-dev-Q8_0.gguf"], type="diffusion") == ()


@pytest.mark.parametrize("t", [LMSTUDIO, LLAMACPP], ids=lambda t: t.app)
@pytest.mark.parametrize("name", ["..", "a/b", "", "nul"])
def test_an_unsafe_cleaned_name_cannot_become_a_folder(t: Translation, name: str) -> None:
    with pytest.raises(TranslationError, match=r"cleaned name") as caught:
        links(t, "gguf", ["m.gguf"], type="llm", family="llama", name=name)
    assert t.source in str(caught.value) and "{model}" in str(caught.value)


def test_every_folder_of_the_new_apps_is_in_the_research_notes() -> None:
    text = (REPO / "docs" / "app-folders.md").read_text(encoding="utf-8")
    for name in OTHER_APPS:
        for rule in bundled(name).rules:
            for target in rule.targets:
                assert f"`{target}`" in text, f"{name}: {target} is not in docs/app-folders.md"


# --- the {model} placeholder --------------------------------------------------------------------


def test_the_model_placeholder_is_the_cleaned_name_in_file_and_folder_rules() -> None:
    t = translation(
        {"match": {"kind": ["gguf"]}, "targets": ["{family}/{model}", "all"]},
        {"match": {"kind": ["diffusers"]}, "targets": ["bundles/{model}"], "link": "folder"},
    )
    assert links(t, "gguf", ["q.gguf"], family="qwen", name="qwen-7b") == (
        LinkWant("q.gguf", "all", "q.gguf"),
        LinkWant("q.gguf", "qwen/qwen-7b", "q.gguf"),
    )
    assert links(t, "diffusers", ["model_index.json"], name="sd3") == (
        LinkWant(None, "bundles/sd3", "sd3"),
    )


def test_a_target_with_the_model_placeholder_is_valid(tmp_path: Path) -> None:
    doc = mutate(("rules", 0, "targets"), ["loras/{model}", "{family}/{kind}/{model}"])
    write(tmp_path / "mine", "ok.json", doc)
    (t,), _ = load_translations([tmp_path / "mine"], bundled=False)
    assert folders(links(t, "lora", ["a.safetensors"], family="flux", name="m1")) == [
        "flux/lora/m1",
        "loras/m1",
    ]


def test_an_unknown_placeholder_names_model_in_the_fix(tmp_path: Path) -> None:
    write(tmp_path / "mine", "bad.json", mutate(("rules", 0, "targets"), ["x/{repo}"]))
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "mine"], bundled=False)
    (problem,) = caught.value.problems
    assert "unknown placeholder {repo}" in problem.message and "{model}" in problem.fix


# --- matching with custom rules ----------------------------------------------------------------


def translation(*rules: dict[str, Any], versions: str = "*", source: str = "t.json") -> Translation:
    doc = {"app": "app", "versions": versions, "rules": list(rules)}
    return read_translation(json.dumps(doc), source)


TAGGED = translation(
    {
        "match": {"kind": ["lora"], "tags": ["pony", "xl"], "exclude_tags": ["nsfw"]},
        "targets": ["pony"],
    },
    {"match": {"kind": ["lora"], "family": ["flux", "flux2"]}, "targets": ["flux"]},
    {"match": {"type": ["diffusion"], "files": ["*.safetensors"]}, "targets": ["fallback"]},
)


@pytest.mark.parametrize(
    ("type_", "family", "kind", "tags", "expected"),
    [
        ("diffusion", "sdxl", "lora", ("pony", "xl"), ["pony"]),
        ("diffusion", "sdxl", "lora", ("xl", "pony", "extra"), ["pony"]),
        ("diffusion", "sdxl", "lora", ("pony",), ["fallback"]),  # not all tags
        ("diffusion", "sdxl", "lora", ("pony", "xl", "nsfw"), ["fallback"]),  # excluded tag
        ("diffusion", "flux", "lora", (), ["flux"]),
        ("diffusion", "flux2", "lora", ("pony", "xl"), ["pony"]),  # first match wins
        ("diffusion", "flux2", "lora", (), ["flux"]),
        ("llm", "flux", "lora", (), ["flux"]),  # no type in that rule: any type
        ("llm", "sdxl", "lora", (), []),  # fallback wants diffusion
        ("diffusion", "sdxl", "vae", (), ["fallback"]),
    ],
)
def test_match_fields(
    type_: str, family: str, kind: str, tags: tuple[str, ...], expected: list[str]
) -> None:
    wants = links(TAGGED, kind, ["m.safetensors"], type=type_, family=family, tags=tags)
    assert folders(wants) == expected


def test_first_matching_rule_wins_per_file() -> None:
    t = translation(
        {"match": {"files": ["special_*"]}, "targets": ["special"]},
        {"match": {"files": ["*.safetensors"]}, "targets": ["all"]},
        {"match": {"files": ["special_*"]}, "targets": ["never"]},
    )
    wants = links(t, "x", ["special_a.safetensors", "plain.safetensors", "special_b.txt"])
    assert [(w.folder, w.name) for w in wants] == [
        ("all", "plain.safetensors"),
        ("special", "special_a.safetensors"),
        ("special", "special_b.txt"),
    ]


def test_file_patterns_match_the_base_name_case_insensitively() -> None:
    t = translation(
        {"match": {"files": ["*.SafeTensors", "model-?.bin", "[ab]*.pt"]}, "targets": ["x"]}
    )
    wants = links(t, "k", ["sub/M.SAFETENSORS", "model-1.bin", "model-12.bin", "b1.pt", "c1.pt"])
    assert sorted(w.name for w in wants) == ["M.SAFETENSORS", "b1.pt", "model-1.bin"]


def test_placeholders_are_filled_and_several_targets_each_get_a_link() -> None:
    t = translation(
        {"match": {"kind": ["lora"]}, "targets": ["loras/{family}", "{type}/{kind}s-{family}"]},
        {
            "match": {"kind": ["diffusers"]},
            "targets": ["diffusers/{family}", "bundles"],
            "link": "folder",
        },
    )
    assert links(t, "lora", ["a.safetensors"], family="flux") == (
        LinkWant("a.safetensors", "diffusion/loras-flux", "a.safetensors"),
        LinkWant("a.safetensors", "loras/flux", "a.safetensors"),
    )
    assert links(
        t, "diffusers", ["model_index.json", "unet/x.bin"], family="sd3", name="sd3_m"
    ) == (
        LinkWant(None, "bundles", "sd3_m"),
        LinkWant(None, "diffusers/sd3", "sd3_m"),
    )


def test_output_is_sorted_and_has_no_duplicates() -> None:
    t = translation({"match": {}, "targets": ["b", "a"]})
    wants = links(t, "k", ["z.bin", "y.bin", "z.bin"])
    assert wants == (
        LinkWant("y.bin", "a", "y.bin"),
        LinkWant("z.bin", "a", "z.bin"),
        LinkWant("y.bin", "b", "y.bin"),
        LinkWant("z.bin", "b", "z.bin"),
    )


def test_a_rule_without_match_accepts_everything() -> None:
    t = translation({"targets": ["all"]})
    assert len(links(t, "anything", ["a", "b.c"], type="other")) == 2


@pytest.mark.parametrize(
    ("kind", "family", "name"),
    [
        ("lora", "..", "m"), ("lora", "a/b", "m"), ("lora", "nul", "m"), ("lora", "", "m"),
        ("diffusers", "ok", ".."), ("diffusers", "ok", "a/b"), ("diffusers", "ok", ""),
    ],
)  # fmt: skip
def test_unsafe_values_raise_instead_of_escaping(kind: str, family: str, name: str) -> None:
    t = translation(
        {"match": {"kind": ["lora"]}, "targets": ["loras/{family}"]},
        {"match": {"kind": ["diffusers"]}, "targets": ["diffusers"], "link": "folder"},
    )
    with pytest.raises(TranslationError, match=r"t\.json"):
        links(t, kind, ["a.bin"], family=family, name=name)


def test_an_unsafe_value_in_an_unused_placeholder_does_not_matter() -> None:
    t = translation({"targets": ["loras"]})
    assert folders(links(t, "lora", ["a.bin"], family="../..")) == ["loras"]


# --- selection ---------------------------------------------------------------------------------


def made(
    versions: str, source: str, *, app: str = "comfyui", variant: str = "default"
) -> Translation:
    rule = Rule(Match(), ("x",), LinkScope.FILE)
    return Translation(app, parse_range(versions), variant, (rule,), source)


@pytest.mark.parametrize(
    ("text", "rank"),
    [
        ("==0.3.62", 0), ("0.3.62", 0), (">=0.3,==0.3.62", 0),
        (">=0.3,<0.4", 1), ("^0.3", 1), ("~0.3.1", 1), ("~=0.3", 1), ("0.3.x", 1), ("==0.3.*", 1),
        (">=0.2.7", 2), ("<0.2.7", 2), ("<=1", 2), (">1", 2), ("!=0.3.1", 2),
        ("*", 3), ("", 3),
    ],
)  # fmt: skip
def test_range_rank(text: str, rank: int) -> None:
    assert range_rank(parse_range(text)) == rank


@pytest.mark.parametrize(
    ("ranges", "version", "winner"),
    [
        (["*", ">=0.3", ">=0.3,<0.4", "==0.3.62"], "0.3.62", "==0.3.62"),
        (["*", ">=0.3", ">=0.3,<0.4", "==0.3.62"], "0.3.61", ">=0.3,<0.4"),
        (["*", ">=0.3", ">=0.3,<0.4", "==0.3.62"], "0.4.0", ">=0.3"),
        (["*", ">=0.3", ">=0.3,<0.4", "==0.3.62"], "0.2.0", "*"),
        ([">=0.2.7", "<0.2.7"], "0.2.7", ">=0.2.7"),
        ([">=0.2.7", "<0.2.7"], "0.2.6", "<0.2.7"),
    ],
)
def test_the_narrowest_range_wins(ranges: list[str], version: str, winner: str) -> None:
    pool = [made(r, f"{i}.json") for i, r in enumerate(ranges)]
    random.Random(7).shuffle(pool)
    assert select([], pool, "comfyui", "default", version).versions == parse_range(winner)
    assert select(pool, [], "comfyui", "default", version).versions == parse_range(winner)


def test_user_translations_win_over_bundled_ones_even_when_wider() -> None:
    user = [made("*", "mine.json")]
    bundled = [made("==0.3.62", "shipped.json")]
    assert select(user, bundled, "comfyui", "default", "0.3.62").source == "mine.json"


def test_bundled_ones_are_used_when_no_user_file_fits() -> None:
    user = [made("<0.3", "mine.json"), made("*", "other.json", variant="portable")]
    bundled = [made(">=0.3", "shipped.json")]
    assert select(user, bundled, "comfyui", "default", "0.3.62").source == "shipped.json"


def test_app_and_variant_must_match() -> None:
    pool = [
        made("*", "a.json", app="forge"),
        made("*", "b.json", variant="portable"),
        made("*", "c.json"),
    ]
    assert select([], pool, "comfyui", "default", "1").source == "c.json"
    assert select([], pool, "comfyui", "portable", "1").source == "b.json"
    assert select([], pool, "forge", "default", "1").source == "a.json"


def test_a_tie_is_an_error_naming_both_files_and_the_fix() -> None:
    pool = [made(">=0.3", "mine/a.json"), made(">=0.2", "mine/b.json"), made("*", "mine/c.json")]
    with pytest.raises(TranslationError) as caught:
        select(pool, [], "comfyui", "default", "0.3.62")
    text = str(caught.value)
    assert "mine/a.json" in text and "mine/b.json" in text and "mine/c.json" not in text
    assert "narrow" in text and "0.3.62" in text


def test_no_candidate_is_an_error_listing_the_available_ranges() -> None:
    pool = [
        made(">=0.3", "a.json"),
        made("<0.2", "b.json"),
        made("*", "p.json", variant="portable"),
    ]
    with pytest.raises(TranslationError) as caught:
        select([], pool, "comfyui", "default", "0.2.5")
    text = str(caught.value)
    assert "comfyui" in text and "default" in text and "0.2.5" in text
    assert ">=0.3" in text and "<0.2" in text and "portable" in text


def test_an_unknown_app_is_an_error_naming_the_known_apps() -> None:
    # (forge used to be the unknown app here; it is bundled now)
    with pytest.raises(TranslationError, match=r"'invokeai'.*a1111, comfyui, forge"):
        select(USER, BUNDLED, "invokeai", "default", "1.0")


def test_an_unknown_variant_of_comfyui_names_what_exists() -> None:
    with pytest.raises(TranslationError, match=r"variant default versions >=0\.2\.7"):
        select(USER, BUNDLED, "comfyui", "portable", "0.3.62")


# --- user folders on disk ----------------------------------------------------------------------

GOOD: dict[str, Any] = {
    "app": "comfyui",
    "versions": "==0.3.62",
    "variant": "default",
    "description": "my layout",
    "rules": [
        {"match": {"kind": ["lora"], "files": ["*.safetensors"]}, "targets": ["loras/mlib"]},
        {"match": {"kind": ["diffusers"]}, "targets": ["diffusers"], "link": "folder"},
    ],
}


def write(folder: Path, name: str, doc: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2), encoding="utf-8")
    return path


def test_user_folder_files_are_read_and_preferred(tmp_path: Path) -> None:
    write(tmp_path / "mine", "comfyui_0.3.62_default.json", GOOD)
    write(tmp_path / "mine", "notes.txt", "not a translation")
    (tmp_path / "mine" / "sub").mkdir()
    write(tmp_path / "mine" / "sub", "ignored.json", "{broken")
    user, bundled = load_translations([tmp_path / "mine"])
    assert [t.source.rsplit("/", 1)[-1] for t in user] == ["comfyui_0.3.62_default.json"]
    assert bundled == BUNDLED
    chosen = select(user, bundled, "comfyui", "default", "0.3.62")
    assert chosen is user[0] and chosen.description == "my layout"
    assert folders(links(chosen, "lora", ["a.safetensors"])) == ["loras/mlib"]
    assert select(user, bundled, "comfyui", "default", "0.3.61") is CURRENT


def test_user_folders_keep_their_order_and_files_sort_by_name(tmp_path: Path) -> None:
    for folder, names in (("z", ["b.json", "a.json"]), ("a", ["c.json"])):
        for name in names:
            write(tmp_path / folder, name, {**GOOD, "versions": f"=={len(name)}.{ord(name[0])}"})
    user, bundled = load_translations([tmp_path / "z", tmp_path / "a"], bundled=False)
    assert [PurePosixPath(t.source).name for t in user] == ["a.json", "b.json", "c.json"]
    assert bundled == []


def test_a_missing_folder_is_a_problem(tmp_path: Path) -> None:
    write(tmp_path / "there", "x.json", GOOD)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "gone", tmp_path / "there", tmp_path / "afile"])
    problems = caught.value.problems
    assert [p.message for p in problems] == ["translation folder not found", "not a folder"]
    assert "gone" in problems[0].file and "translations:" in problems[0].fix


def test_validate_reports_two_files_that_would_always_tie(tmp_path: Path) -> None:
    write(tmp_path / "mine", "a.json", GOOD)
    write(tmp_path / "mine", "b.json", {**GOOD, "versions": "0.3.62"})
    problems = translation_problems([tmp_path / "mine"])
    assert len(problems) == 1
    assert problems[0].file.endswith("b.json") and "a.json" in problems[0].message
    assert problems[0].path == "versions"


def mutate(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """GOOD with the value at ``path`` replaced (or removed when value is DELETE)."""
    doc = copy.deepcopy(GOOD)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()

# path to change, new value, the field the problem names, words in the message
MISTAKES = [
    (("app",), DELETE, "", "missing required field 'app'"),
    (("rules",), DELETE, "", "missing required field 'rules'"),
    (("versions",), DELETE, "", "missing required field 'versions'"),
    (("extra",), 1, "extra", "unknown field"),
    (("app",), "ComfyUI", "app", "wrong form"),
    (("variant",), "My Variant", "variant", "wrong form"),
    (("versions",), "1.2 - 1.4", "versions", "hyphen ranges are not supported"),
    (("versions",), ">=banana", "versions", "invalid version range"),
    (("versions",), 0.3, "versions", "expected a string"),
    (("description",), 5, "description", "expected"),
    (("rules",), [], "rules", "should be non-empty"),
    (("rules", 0, "targets"), DELETE, "rules[0]", "missing required field 'targets'"),
    (("rules", 0, "targets"), "loras", "rules[0].targets", "expected a list"),
    (("rules", 0, "targets"), [], "rules[0].targets", "empty"),
    (("rules", 0, "targets"), ["../outside"], "rules[0].targets[0]", "'..'"),
    (("rules", 0, "targets"), ["loras/{family}/.."], "rules[0].targets[0]", "'..'"),
    (("rules", 0, "targets"), ["/abs/loras"], "rules[0].targets[0]", "absolute"),
    (("rules", 0, "targets"), ["C:\\loras"], "rules[0].targets[0]", "absolute"),
    (("rules", 0, "targets"), ["loras\\sub"], "rules[0].targets[0]", "backslash"),
    (
        ("rules", 0, "targets"),
        ["loras/{name}"],
        "rules[0].targets[0]",
        "unknown placeholder {name}",
    ),
    (
        ("rules", 0, "targets"),
        ["loras/{Family}"],
        "rules[0].targets[0]",
        "unknown placeholder {Family}",
    ),
    (("rules", 0, "targets"), ["loras/{family"], "rules[0].targets[0]", "outside a placeholder"),
    (("rules", 0, "targets"), ["loras/}"], "rules[0].targets[0]", "outside a placeholder"),
    (("rules", 0, "targets"), ["loras", "loras"], "rules[0].targets", "non-unique"),
    (("rules", 0, "link"), "symlink", "rules[0].link", "not allowed"),
    (("rules", 0, "extra"), True, "rules[0].extra", "unknown field"),
    (("rules", 0, "match"), "lora", "rules[0].match", "expected a mapping"),
    (("rules", 0, "match", "kinds"), ["lora"], "rules[0].match.kinds", "unknown field"),
    (("rules", 0, "match", "kind"), "lora", "rules[0].match.kind", "expected a list"),
    (("rules", 0, "match", "kind"), [], "rules[0].match.kind", "empty"),
    (("rules", 0, "match", "kind"), ["LoRA"], "rules[0].match.kind[0]", "wrong form"),
    (("rules", 0, "match", "type"), ["model"], "rules[0].match.type[0]", "not allowed"),
    (("rules", 0, "match", "family"), "sdxl", "rules[0].match.family", "expected a list"),
    (("rules", 0, "match", "tags"), ["has space"], "rules[0].match.tags[0]", "wrong form"),
    (
        ("rules", 0, "match", "files"),
        ["loras/*.safetensors"],
        "rules[0].match.files[0]",
        "file name only",
    ),
    (("rules", 0, "match", "files"), "*.safetensors", "rules[0].match.files", "expected a list"),
    (("rules", 0, "match", "files"), [""], "rules[0].match.files[0]", "non-empty"),
    (
        ("rules", 0, "match", "exclude_tags"),
        ["a"],
        "rules[0].match.exclude_tags",
        "both required and excluded",
    ),
]


@pytest.mark.parametrize(("path", "value", "field", "words"), MISTAKES)
def test_each_mistake_names_the_file_and_the_field(
    tmp_path: Path, path: tuple[str | int, ...], value: Any, field: str, words: str
) -> None:
    doc = mutate(path, value)
    if field == "rules[0].match.exclude_tags":
        doc["rules"][0]["match"]["tags"] = ["a"]
    write(tmp_path / "mine", "bad.json", doc)
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "mine"], bundled=False)
    problems = caught.value.problems
    assert all(p.file.endswith("bad.json") for p in problems), problems
    assert any(p.path == field and words in p.message for p in problems), problems
    assert len(problems) == 1, problems  # one mistake, one problem
    assert problems[0].fix, "every problem says how to fix it"
    assert problems[0].render().startswith(problems[0].file)


def test_problems_carry_the_line_of_the_field(tmp_path: Path) -> None:
    doc = mutate(("rules", 1, "targets"), ["../up"])
    path = write(tmp_path / "mine", "bad.json", doc)
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "mine"], bundled=False)
    (problem,) = caught.value.problems
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "../up" in text)
    assert problem.line == line
    assert f"bad.json:{line}: rules[1].targets[0]: " in problem.render()


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    first = mutate(("versions",), "1 - 2")
    first["rules"][0]["targets"] = ["{x}"]
    first["rules"][1]["link"] = "hard"
    write(tmp_path / "mine", "a.json", first)
    write(tmp_path / "mine", "b.json", mutate(("app",), DELETE))
    write(tmp_path / "mine", "c.json", GOOD)
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "mine", tmp_path / "gone"])
    found = {(PurePosixPath(p.file).name, p.path) for p in caught.value.problems}
    assert found == {
        ("a.json", "versions"),
        ("a.json", "rules[0].targets[0]"),
        ("a.json", "rules[1].link"),
        ("b.json", ""),
        ("gone", ""),
    }


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('{\n  "app": "comfyui",\n  "versions": "*"\n  "rules": []\n}', 4, "invalid JSON"),
        ("", 1, "invalid JSON"),
        (
            '{"app": "a", "app": "b", "versions": "*", "rules": [{"targets": ["x"]}]}',
            1,
            "duplicate key",
        ),
        ("[]", 1, "expected a mapping"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, line: int | None, words: str) -> None:
    write(tmp_path / "mine", "bad.json", text)
    with pytest.raises(InvalidInputError) as caught:
        load_translations([tmp_path / "mine"], bundled=False)
    (problem,) = caught.value.problems
    assert problem.file.endswith("bad.json") and words in problem.message
    assert problem.line == line


def test_not_utf8_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "bad.json").write_bytes(b'{"app": "\xff"}')
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        load_translations([tmp_path / "mine"], bundled=False)


def test_read_translation_defaults() -> None:
    t = read_translation(
        json.dumps({"app": "a", "versions": ">= 0.3, < 0.4", "rules": [{"targets": ["x"]}]}), "f"
    )
    assert t.variant == "default" and t.versions.text == "<0.4,>=0.3" and t.description == ""
    assert t.rules == (Rule(Match(), ("x",), LinkScope.FILE),)
    lines = read_translation(json.dumps({**GOOD, "description": ["a", "b"]}), "f").description
    assert lines == "a\nb"


# --- properties --------------------------------------------------------------------------------

PROPERTY_RULES = translation(
    {"match": {"kind": ["lora"], "tags": ["a"]}, "targets": ["loras/{family}/{kind}", "{type}"]},
    {"match": {"kind": ["diffusers"]}, "targets": ["diffusers/{family}"], "link": "folder"},
    {
        "match": {"files": ["*.safetensors", "*.gguf"], "exclude_tags": ["b"]},
        "targets": ["all/{kind}"],
    },
    {"match": {"family": ["flux"]}, "targets": ["flux"], "link": "folder"},
)
COMPONENT = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=12
)
SAFE_PART = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,10}", fullmatch=True)
FILE = (
    st.lists(SAFE_PART, min_size=1, max_size=3)
    .map("/".join)
    .flatmap(lambda p: st.sampled_from([p, p + ".safetensors", p + ".GGUF", p + ".md"]))
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=st.sampled_from([PROPERTY_RULES, *BUNDLED]),
    type_=st.sampled_from([m.value for m in ModelType]),
    family=st.one_of(st.sampled_from(["sdxl", "flux", "..", "a/b", "nul"]), COMPONENT),
    kind=st.sampled_from([*KNOWN_KINDS, *EXTRA_KINDS, "lora"]),
    tags=st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
    files=st.lists(FILE, max_size=6),
    name=st.one_of(st.sampled_from(["model", "..", "a/b"]), COMPONENT),
    seed=st.integers(0, 1000),
)
def test_links_are_deterministic_and_never_leave_the_models_folder(
    t: Translation,
    type_: str,
    family: str,
    kind: str,
    tags: list[str],
    files: list[str],
    name: str,
    seed: int,
) -> None:
    def run(order: list[str], tag_order: list[str]) -> tuple[LinkWant, ...] | str:
        try:
            return links_for(
                t,
                type=type_,
                family=family,
                kind=kind,
                tags=tag_order,
                files=order,
                cleaned_name=name,
            )
        except TranslationError as exc:
            return str(exc)

    first = run(files, tags)
    shuffled, shuffled_tags = files[:], tags[:]
    random.Random(seed).shuffle(shuffled)
    random.Random(seed + 1).shuffle(shuffled_tags)
    assert run(shuffled, shuffled_tags) == first
    if isinstance(first, str):
        assert t.source in first
        return
    assert list(first) == sorted(set(first), key=lambda w: (w.folder, w.name, w.file or ""))
    for want in first:
        check_relpath(want.folder)
        parts = PurePosixPath(want.folder).parts
        assert ".." not in parts and not want.folder.startswith("/")
        assert "/" not in want.name and want.name not in ("", ".", "..")
        if want.file is None:
            assert want.name == name
        else:
            assert want.file in files and want.name == PurePosixPath(want.file).name
