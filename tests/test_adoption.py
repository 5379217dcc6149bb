"""reconciler.adoption on real trees under tmp_path: an app's models folder read backwards through
its translation, checked by probing tiny valid model files, and left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from reconciler import adoption
from reconciler.adoption import UNKNOWN_FOLDER, Found, Scan, reverse_rules, scan, tree_digest
from reconciler.errors import FileChangedError, ReconcilerError
from reconciler.hashing import hash_file
from reconciler.model import ModelType
from reconciler.translation_files import load_translations, read_translation
from reconciler.translations import LinkScope, Translation, links_for, select

USER, BUNDLED = load_translations(())
COMFY = select(USER, BUNDLED, "comfyui", "default", "0.3.62")
A1111 = select(USER, BUNDLED, "a1111", "default", "1.10.1")
D, LLM = ModelType.DIFFUSION, ModelType.LLM
FILE, FOLDER = LinkScope.FILE, LinkScope.FOLDER


# --- tiny valid model files ----------------------------------------------------------------------


def safetensors(*names: str) -> bytes:
    """8-byte little-endian header length, the JSON header, then 2 zero bytes per tensor."""
    header = {
        name: {"dtype": "F16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]}
        for i, name in enumerate(names)
    }
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(2 * len(names))


def gguf(architecture: str) -> bytes:
    """GGUF v3 with no tensors and one key/value, general.architecture."""

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    kv = text("general.architecture") + struct.pack("<I", 8) + text(architecture)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv


SD15_CHECKPOINT = safetensors(
    "model.diffusion_model.input_blocks.0.0.weight",
    "first_stage_model.encoder.conv_in.weight",
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
)
SDXL_CHECKPOINT = safetensors(
    "model.diffusion_model.input_blocks.0.0.weight",
    "first_stage_model.encoder.conv_in.weight",
    "conditioner.embedders.1.model.token_embedding.weight",
)
SD15_LORA = safetensors(
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
)
SDXL_LORA = safetensors(
    "lora_unet_input_blocks_4_1_proj_in.lora_down.weight",
    "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
)
VAE = safetensors("encoder.conv_in.weight", "decoder.conv_out.weight")
T5 = safetensors("encoder.block.0.layer.0.SelfAttention.q.weight", "shared.weight")
UNET = safetensors(
    "down_blocks.0.attentions.0.proj_in.weight", "up_blocks.0.resnets.0.conv1.weight"
)
CONTROLNET = safetensors("control_model.input_hint_block.0.weight")
IPADAPTER = safetensors("ip_adapter.1.to_k_ip.weight", "image_proj.proj.weight")
PICKLE = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u."


def put(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def snapshot(root: Path) -> set[tuple[str, int, int, int]]:
    """(path, size, mtime_ns, inode) of everything under ``root``, links not followed."""
    out = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            out.add((os.path.join(folder, name), st.st_size, st.st_mtime_ns, st.st_ino))
    return out


def by_rel(result: Scan) -> dict[str, Found]:
    return {f.rel: f for f in result.found}


# --- a ComfyUI models folder ---------------------------------------------------------------------


def comfy_tree(tmp: Path) -> tuple[Path, Path]:
    """ComfyUI/models as users have it, a library next to it, and a folder elsewhere."""
    root, library = tmp / "ComfyUI" / "models", tmp / "lib"
    put(root, "checkpoints/a.safetensors", SD15_CHECKPOINT)
    put(root, "checkpoints/copy_of_a.safetensors", SD15_CHECKPOINT)
    put(root, "checkpoints/sub/b.safetensors", SDXL_CHECKPOINT)
    put(root, "checkpoints/readme.txt", b"where the checkpoints go\n")
    put(root, "checkpoints/put_checkpoints_here", b"")
    put(root, "loras/My Lora (v2).safetensors", SD15_LORA)
    put(root, "loras/sdxl/c.safetensors", SDXL_LORA)
    put(root, "loras/.hidden.safetensors", SD15_LORA)
    put(root, "vae/v.safetensors", VAE)
    put(root, "vae/oops.safetensors", SD15_LORA + b"\0")  # a LoRA, misplaced
    put(root, "text_encoders/t5.safetensors", T5)
    put(root, "diffusion_models/flux-q4.gguf", gguf("flux"))
    put(root, "diffusion_models/llama.gguf", gguf("llama"))
    put(root, "diffusers/pipe/model_index.json", b'{"_class_name": "StableDiffusionPipeline"}')
    put(root, "diffusers/pipe/unet/diffusion_pytorch_model.safetensors", UNET)
    put(root, "diffusers/broken/unet/diffusion_pytorch_model.safetensors", UNET)
    put(root, "diffusers/loose.safetensors", UNET)
    put(root, "random/x.bin", b"not a model folder")
    put(root, "stray.safetensors", SD15_LORA)
    put(root, ".cache/huggingface/x.safetensors", SD15_LORA)
    elsewhere = put(tmp, "elsewhere/x.safetensors", SD15_LORA)
    os.symlink(os.path.relpath(elsewhere, root / "loras"), root / "loras" / "link.safetensors")
    mine = put(library, "diffusion/sdxl/m/m.safetensors", SDXL_LORA)
    os.symlink(mine, root / "loras" / "m.safetensors")
    os.symlink(tmp / "gone.safetensors", root / "vae" / "dangling.safetensors")
    return root, library


#: rel: (kind, type, family, scope, folder, filename, probe_kind)
COMFY_FOUND = {
    "checkpoints/a.safetensors": ("checkpoint", D, "sd15", FILE, "checkpoints", "a.safetensors", "checkpoint"),
    "checkpoints/copy_of_a.safetensors": ("checkpoint", D, "sd15", FILE, "checkpoints", "copy_of_a.safetensors", "checkpoint"),
    "checkpoints/sub/b.safetensors": ("checkpoint", D, "sdxl", FILE, "checkpoints/sub", "b.safetensors", "checkpoint"),
    "loras/My Lora (v2).safetensors": ("lora", D, "sd15", FILE, "loras", "My Lora (v2).safetensors", "lora"),
    "loras/sdxl/c.safetensors": ("lora", D, "sdxl", FILE, "loras/sdxl", "c.safetensors", "lora"),
    "vae/v.safetensors": ("vae", D, "unknown", FILE, "vae", "v.safetensors", "vae"),
    # the folder wins over the probe, which is only reported (below)
    "vae/oops.safetensors": ("vae", D, "sd15", FILE, "vae", "oops.safetensors", "lora"),
    "text_encoders/t5.safetensors": ("text_encoder", D, "unknown", FILE, "text_encoders", "t5.safetensors", "text_encoder"),
    "diffusion_models/flux-q4.gguf": ("diffusion_model", D, "flux", FILE, "diffusion_models", "flux-q4.gguf", "diffusion_model"),
    # two rules send .gguf files to diffusion_models; the probe picks the 'gguf' one, whose type is diffusion
    "diffusion_models/llama.gguf": ("gguf", D, "llama", FILE, "diffusion_models", "llama.gguf", "gguf"),
    "diffusers/pipe": ("diffusers", D, "unknown", FOLDER, "diffusers", "pipe", "diffusion_model"),
}  # fmt: skip

#: rel: (reason, is_dir)
COMFY_UNCLASSIFIED = {
    "checkpoints/put_checkpoints_here": ("a file without an extension where only model files go (checkpoints takes *.safetensors, *.ckpt, *.pt, *.pt2, *.bin, *.pth, *.pkl, *.sft)", False),
    "checkpoints/readme.txt": ("a .txt file where only model files go (checkpoints takes *.safetensors, *.ckpt, *.pt, *.pt2, *.bin, *.pth, *.pkl, *.sft)", False),
    "diffusers/broken": ("a folder without model_index.json where only diffusers model folders go", True),
    "diffusers/loose.safetensors": ("a loose file where only diffusers model folders go (one folder per model)", False),
    "random": (UNKNOWN_FOLDER, True),
    "stray.safetensors": (UNKNOWN_FOLDER, False),
}  # fmt: skip


@pytest.fixture
def comfy(tmp_path: Path) -> tuple[Path, Path, Scan]:
    root, library = comfy_tree(tmp_path)
    before = snapshot(tmp_path)
    result = scan(root, COMFY, library=library)
    assert snapshot(tmp_path) == before, "scan changed nothing on disk"
    return root, library, result


def test_every_file_is_classified_from_its_folder(comfy: tuple[Path, Path, Scan]) -> None:
    root, _, result = comfy
    found = by_rel(result)
    assert sorted(found) == sorted(COMFY_FOUND)
    for rel, (kind, type_, family, scope, folder, filename, probe_kind) in COMFY_FOUND.items():
        item = found[rel]
        got = (item.kind, item.type, item.family, item.scope, item.folder, item.filename)
        assert got == (kind, type_, family, scope, folder, filename), rel
        assert item.probe_kind == probe_kind, (rel, item.probe_reason)
        assert item.path == root / rel and item.probe_reason
    assert [f.rel for f in result.found] == sorted(COMFY_FOUND), "sorted by rel"
    assert (result.app, result.translation, result.hashed) == ("comfyui", COMFY.source, True)


def test_hashes_sizes_and_stats_are_the_files(comfy: tuple[Path, Path, Scan]) -> None:
    root, _, result = comfy
    for item in result.found:
        if item.scope is FOLDER:
            continue
        data = (root / item.rel).read_bytes()
        assert item.size == len(data) and item.sha256 == hashlib.sha256(data).hexdigest()
        assert item.blake3 is not None and len(item.blake3) == 64
        st = os.lstat(root / item.rel)
        assert item.stat is not None and (item.stat.inode, item.stat.size) == (
            st.st_ino,
            st.st_size,
        )
        assert item.files == () and item.tree_digest is None


def test_a_diffusers_folder_is_one_item(comfy: tuple[Path, Path, Scan]) -> None:
    _, _, result = comfy
    pipe = by_rel(result)["diffusers/pipe"]
    files = ["model_index.json", "unet/diffusion_pytorch_model.safetensors"]
    assert [f.path for f in pipe.files] == files
    sums = [hashlib.sha256((pipe.path / f).read_bytes()).hexdigest() for f in files]
    assert [f.sha256 for f in pipe.files] == sums
    assert pipe.size == sum((pipe.path / f).stat().st_size for f in files)
    assert (pipe.sha256, pipe.blake3, pipe.stat) == (None, None, None)
    assert pipe.tree_digest == tree_digest(zip(files, sums, strict=True))
    assert pipe.probe_reason.startswith("unet/diffusion_pytorch_model.safetensors: ")


def test_identical_files_are_one_group_and_the_first_is_kept(
    comfy: tuple[Path, Path, Scan],
) -> None:
    root, _, result = comfy
    assert result.duplicates == (
        (root / "checkpoints/a.safetensors", root / "checkpoints/copy_of_a.safetensors"),
    )


def test_what_is_not_adopted_says_why(comfy: tuple[Path, Path, Scan]) -> None:
    root, _, result = comfy
    got = {u.rel: (u.reason, u.is_dir) for u in result.unclassified}
    assert got == COMFY_UNCLASSIFIED
    assert all(u.path == root / u.rel for u in result.unclassified)
    everything = {f.rel for f in result.found} | set(got)
    assert not any(".cache" in rel or ".hidden" in rel for rel in everything), "hidden: skipped"
    assert "random/x.bin" not in got, "an unknown folder is listed once, not walked"


def test_links_are_reported_never_followed(comfy: tuple[Path, Path, Scan]) -> None:
    root, library, result = comfy
    users = {u.rel: (u.points_to, u.target, u.exists) for u in result.user_links}
    assert users == {
        "loras/link.safetensors": (
            "../../../elsewhere/x.safetensors",
            root.parent.parent / "elsewhere" / "x.safetensors",
            True,
        ),
        "vae/dangling.safetensors": (
            str(root.parent.parent / "gone.safetensors"),
            root.parent.parent / "gone.safetensors",
            False,
        ),
    }
    assert [u.rel for u in result.library_links] == ["loras/m.safetensors"]
    assert result.library_links[0].target == library / "diffusion/sdxl/m/m.safetensors"
    linked = {u.rel for u in (*result.user_links, *result.library_links)}
    assert not linked & ({f.rel for f in result.found} | {u.rel for u in result.unclassified})


def test_the_probe_disagreeing_is_a_warning(comfy: tuple[Path, Path, Scan]) -> None:
    root, _, result = comfy
    [only] = result.probe_disagreements
    assert (only.path, only.rel, only.kind, only.probe_kind) == (
        root / "vae/oops.safetensors",
        "vae/oops.safetensors",
        "vae",
        "lora",
    )
    assert only.message.startswith("declared kind 'vae' but the file looks like 'lora'")


def test_without_a_library_every_link_is_the_users(tmp_path: Path) -> None:
    root, _ = comfy_tree(tmp_path)
    result = scan(root, COMFY)
    assert result.library_links == ()
    assert [u.rel for u in result.user_links] == [
        "loras/link.safetensors",
        "loras/m.safetensors",
        "vae/dangling.safetensors",
    ]


def test_forward_translation_sends_each_file_back_to_its_folder(
    comfy: tuple[Path, Path, Scan],
) -> None:
    """Reading a folder backwards and the translation forwards meet: same spot, same name."""
    _, _, result = comfy
    for item in result.found:
        files = [f.path for f in item.files] if item.scope is FOLDER else [item.filename]
        wants = links_for(
            COMFY,
            type=item.type.value,
            family=item.family,
            kind=item.kind,
            tags=item.tags,
            files=files,
            cleaned_name=item.filename,
        )
        assert item.prefix in {w.folder for w in wants}, (item.rel, wants)


def test_a_quick_listing_reads_no_file_beyond_its_header(tmp_path: Path) -> None:
    root, library = comfy_tree(tmp_path)
    full = scan(root, COMFY, library=library)
    quick = scan(root, COMFY, library=library, hash_files=False)
    assert not quick.hashed and quick.duplicates == ()
    assert all(f.sha256 is None and f.blake3 is None and f.tree_digest is None for f in quick.found)
    assert all(f.sha256 is None for item in quick.found for f in item.files)
    strip = {"sha256": None, "blake3": None, "tree_digest": None, "files": ()}

    def bare(s: Scan) -> list[dict[str, object]]:
        return [{**vars(f), **strip} for f in s.found]

    assert bare(quick) == bare(full)
    assert quick.unclassified == full.unclassified


def test_progress_counts_every_hashed_byte(tmp_path: Path) -> None:
    root, _ = comfy_tree(tmp_path)
    seen: list[int] = []
    result = scan(root, COMFY, progress=seen.append)
    assert sum(seen) == result.size


# --- an A1111 data folder ------------------------------------------------------------------------

#: rel: (kind, type, family, folder, probe_kind)
A1111_FOUND = {
    "models/Stable-diffusion/x.safetensors": ("checkpoint", D, "sd15", "models/Stable-diffusion", "checkpoint"),
    "models/Stable-diffusion/x.yaml": ("checkpoint", D, "unknown", "models/Stable-diffusion", None),
    "models/Lora/y.safetensors": ("lora", D, "sdxl", "models/Lora", "lora"),
    "embeddings/e.pt": ("embedding", D, "unknown", "embeddings", None),
    # models/ControlNet takes ControlNets and IP-Adapters: the probe tells them apart
    "models/ControlNet/cn.safetensors": ("controlnet", D, "unknown", "models/ControlNet", "controlnet"),
    "models/ControlNet/ipa.safetensors": ("ipadapter", D, "unknown", "models/ControlNet", "ipadapter"),
}  # fmt: skip


def test_an_a1111_data_folder(tmp_path: Path) -> None:
    root = tmp_path / "stable-diffusion-webui"
    put(root, "models/Stable-diffusion/x.safetensors", SD15_CHECKPOINT)
    put(root, "models/Stable-diffusion/x.yaml", b"model:\n  target: ldm.models.diffusion\n")
    put(root, "models/Lora/y.safetensors", SDXL_LORA)
    put(root, "models/Lora/y.preview.png", b"\x89PNG\r\n\x1a\n")
    put(root, "models/ControlNet/cn.safetensors", CONTROLNET)
    put(root, "models/ControlNet/ipa.safetensors", IPADAPTER)
    put(root, "models/Codeformer/codeformer.pth", PICKLE)
    put(root, "embeddings/e.pt", PICKLE)
    put(root, "venv/lib/python3.11/site-packages/torch/__init__.py", b"")
    put(root, "webui.py", b"print('hello')\n")
    before = snapshot(tmp_path)
    result = scan(root, A1111)
    assert snapshot(tmp_path) == before
    found = {f.rel: (f.kind, f.type, f.family, f.folder, f.probe_kind) for f in result.found}
    assert found == A1111_FOUND
    assert all(f.scope is FILE and f.filename == Path(f.rel).name for f in result.found)
    assert {u.rel: (u.reason, u.is_dir) for u in result.unclassified} == {
        "models/Codeformer": (UNKNOWN_FOLDER, True),
        "models/Lora/y.preview.png": ("a .png file where only model files go (models/Lora takes *.safetensors, *.pt, *.ckpt)", False),
        "venv": (UNKNOWN_FOLDER, True),
        "webui.py": (UNKNOWN_FOLDER, False),
    }  # fmt: skip
    assert result.probe_disagreements == () and result.duplicates == ()


# --- spots ---------------------------------------------------------------------------------------

SYNTHETIC = {
    "app": "synthetic",
    "versions": "*",
    "rules": [
        {"match": {"kind": ["lora"], "family": ["sdxl"], "tags": ["xl"]}, "targets": ["loras/sdxl"]},
        {"match": {"kind": ["lora"]}, "targets": ["loras", "loras/{family}"]},
        {"match": {"type": ["llm", "embedding"], "kind": ["gguf"]}, "targets": ["{family}/{model}"]},
        {"match": {"kind": ["diffusers"], "files": ["model_index.json"]}, "targets": ["diffusers/{family}"], "link": "folder"},
        {"match": {"kind": ["checkpoint", "diffusion_model"]}, "targets": ["x/sd-{family}/y"]},
    ],
}  # fmt: skip


def synthetic() -> Translation:
    return read_translation(json.dumps(SYNTHETIC), "synthetic.json")


def test_reverse_rules_gives_the_literal_folders_longest_first() -> None:
    spots = reverse_rules(synthetic())
    assert [(s.prefix, s.target, s.position, s.depth) for s in spots] == [
        ("loras/sdxl", "loras/sdxl", 0, 0),
        ("diffusers", "diffusers/{family}", 3, 1),
        ("loras", "loras", 1, 0),
        ("loras", "loras/{family}", 1, 1),
        ("x", "x/sd-{family}/y", 4, 2),
    ], "a target that is only placeholders gives no spot; sd-{family} is no literal folder"


def test_reverse_rules_of_comfyui_keep_rule_order_within_a_folder() -> None:
    spots = reverse_rules(COMFY)
    prefixes = [s.prefix for s in spots]
    assert len(spots) == sum(len(r.targets) for r in COMFY.rules)
    assert [s.position for s in spots if s.prefix == "diffusion_models"] == [5, 6]
    assert [s.match.files[0] for s in spots if s.prefix == "diffusion_models"] == [
        "*.safetensors",
        "*.gguf",
    ]
    assert prefixes.index("latent_upscale_models") < prefixes.index("vae"), "longer first"
    assert [s.scope for s in spots if s.prefix == "diffusers"] == [FOLDER]


def test_rules_that_name_one_family_and_tags_give_them(tmp_path: Path) -> None:
    root = tmp_path / "app"
    put(root, "loras/sdxl/a.safetensors", SD15_LORA)  # the folder says sdxl, the probe sd15
    put(root, "loras/sd15/b.safetensors", SD15_LORA)
    put(root, "diffusers/sdxl/pipe/model_index.json", b"{}")
    put(root, "diffusers/sdxl/pipe/vae/model.safetensors", VAE)
    put(root, "x/sd-flux/y/z.safetensors", SDXL_CHECKPOINT)
    put(root, "lmstudio/org/model/q.gguf", gguf("llama"))
    translation = synthetic()
    result = scan(root, translation)
    got = {f.rel: (f.kind, f.family, f.tags, f.prefix, f.folder, f.scope) for f in result.found}
    assert got == {
        "loras/sdxl/a.safetensors": ("lora", "sdxl", ("xl",), "loras/sdxl", "loras/sdxl", FILE),
        "loras/sd15/b.safetensors": ("lora", "sd15", (), "loras", "loras/sd15", FILE),
        "diffusers/sdxl/pipe": ("diffusers", "unknown", (), "diffusers", "diffusers/sdxl", FOLDER),
        "x/sd-flux/y/z.safetensors": ("checkpoint", "sdxl", (), "x", "x/sd-flux/y", FILE),
    }
    assert [u.rel for u in result.unclassified] == ["lmstudio"], "{family}/{model}: no spot"


# --- what goes wrong -----------------------------------------------------------------------------


def test_a_missing_root_or_a_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReconcilerError, match="no such folder"):
        scan(tmp_path / "nope", COMFY)
    put(tmp_path, "file", b"x")
    with pytest.raises(ReconcilerError, match="not a folder"):
        scan(tmp_path / "file", COMFY)


def test_files_that_cannot_be_hashed_are_listed_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    put(root, "loras/locked.safetensors", SD15_LORA)
    put(root, "loras/busy.safetensors", SDXL_LORA)
    put(root, "loras/fine.safetensors", SDXL_LORA + b"\0")
    put(root, "diffusers/pipe/model_index.json", b"{}")
    put(root, "diffusers/pipe/unet/locked.safetensors", UNET)
    os.mkfifo(root / "loras" / "pipe.safetensors")

    def failing(path: Path, progress: object = None) -> object:
        if path.name.startswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        if path.name.startswith("busy"):
            raise FileChangedError(f"{path} changed while it was read")
        return hash_file(path)

    monkeypatch.setattr(adoption, "hash_file", failing)
    result = scan(root, COMFY)
    assert [f.rel for f in result.found] == ["loras/fine.safetensors"]
    assert {u.rel: (u.reason, u.is_dir) for u in result.unclassified} == {
        "diffusers/pipe": ("unet/locked.safetensors: cannot read: Permission denied", True),
        "loras/busy.safetensors": ("it changed while it was scanned (wait until nothing writes to it, then scan again)", False),
        "loras/locked.safetensors": ("cannot read: Permission denied", False),
        "loras/pipe.safetensors": ("not a regular file (a FIFO, socket or device)", False),
    }  # fmt: skip


def test_a_model_folder_holding_a_link_is_not_adopted(tmp_path: Path) -> None:
    root = tmp_path / "models"
    put(root, "diffusers/pipe/model_index.json", b"{}")
    weights = put(tmp_path, "shared/unet.safetensors", UNET)
    (root / "diffusers/pipe/unet").mkdir()
    os.symlink(weights, root / "diffusers/pipe/unet/model.safetensors")
    result = scan(root, COMFY)
    assert result.found == ()
    [folder] = result.unclassified
    assert (folder.rel, folder.is_dir) == ("diffusers/pipe", True)
    assert folder.reason.startswith("holds unet/model.safetensors: a symlink")
    assert [u.rel for u in result.user_links] == ["diffusers/pipe/unet/model.safetensors"]


def test_the_library_inside_the_folder_is_never_adopted(tmp_path: Path) -> None:
    root = tmp_path / "models"
    put(root, "checkpoints/lib/diffusion/sd15/a/a.safetensors", SD15_CHECKPOINT)
    put(root, "checkpoints/mine.safetensors", SDXL_CHECKPOINT)
    result = scan(root, COMFY, library=root / "checkpoints" / "lib")
    assert [f.rel for f in result.found] == ["checkpoints/mine.safetensors"]
    assert [(u.rel, u.reason, u.is_dir) for u in result.unclassified] == [
        ("checkpoints/lib", "the mlib library itself", True)
    ]
