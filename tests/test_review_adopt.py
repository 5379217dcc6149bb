"""Review of ``mlib adopt``, ``link: config`` and the round-trip manifest edits: each test proves
one bug (it fails now, and passes once the bug is fixed, whatever shape the fix takes).

Everything happens under ``tmp_path``; ``mlib`` runs as a subprocess (``scenario.mlib``) except
where a test needs to stand between two steps of the CLI (then ``reconciler.api`` is called).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from scenario import MLIB, mlib, read_yaml, write_yaml
from test_comfyui_sees_links import CHECKPOINT, LORA, _safetensors, contents, existing_install

from reconciler import api

COMFY = 'version: 1\nlibrary: lib\napps:\n  comfy: {{app: comfyui, version: "0.3.62", models_dir: ComfyUI/models{extra}}}\nmodels: []\n'


def comfy_only(base: Path, link: str = "") -> tuple[Path, Path]:
    """A manifest with one ComfyUI target (no models yet) and its empty models folder."""
    models = base / "ComfyUI" / "models"
    models.mkdir(parents=True, exist_ok=True)
    manifest = base / "mlib.yaml"
    manifest.write_text(COMFY.format(extra=f", link: {link}" if link else ""))
    return manifest, models


def run(manifest: Path, *args: str) -> tuple[int, str, str]:
    """``mlib -m MANIFEST ARGS``, its output decoded leniently (file names need not be UTF-8)."""
    r = subprocess.run(
        [str(MLIB), "-m", str(manifest), *args],
        cwd=manifest.parent,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def diffusers_folder(models: Path, name: str = "my-pipe") -> Path:
    pipe = models / "diffusers" / name
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    _safetensors(pipe / "unet" / "diffusion_pytorch_model.safetensors", ["down_blocks.0.x"], 9)
    return pipe


# --- adopt, then change how the adopted model is linked --------------------------------------------


def test_disabling_an_adopted_folder_model_keeps_its_library_files(tmp_path: Path) -> None:
    # planner._plan_finish_move (with executor._finish_move): once an adopted model's link no longer
    # stands where its source was (override --disable/--folder/--filename, the target's version...),
    # the source path is mlib's own symlink to the model folder. observe_source follows it, sees the
    # library's own inodes, and FINISH_MOVE is planned for <link>/<file>; _finish_move lstat()s only
    # the last component, which is the library file reached through the symlink, and unlinks it:
    # the library's only copy of the model is deleted ("source removed; the library holds it").
    # Expected: no finish_move through mlib's link; the model stays whole (verify passes).
    manifest, models = comfy_only(tmp_path)
    diffusers_folder(models)
    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    library = tmp_path / "lib" / "diffusion" / "unknown" / "my-pipe"
    weights = library / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.is_file()
    r = mlib(manifest, "override", "diffusion/unknown/my-pipe", "comfy", "--disable")
    assert r.returncode == 0, r.stderr
    mlib(manifest, "apply", "-y")
    assert weights.is_file() and (library / "model_index.json").is_file(), "library files deleted"
    assert mlib(manifest, "verify").returncode == 0


@pytest.mark.parametrize(
    "change", [["--disable"], ["--filename", "renamed.safetensors"]], ids=["disable", "rename"]
)
def test_changing_an_adopted_files_link_converges(tmp_path: Path, change: list[str]) -> None:
    # planner._plan_finish_move: the same wrong FINISH_MOVE for a single adopted file. Here
    # executor._finish_move refuses (the symlink's own inode differs), which fails the model, so
    # its write_overrides/link/unlink are skipped on every apply: the change can never be applied.
    # Expected: apply succeeds and the next plan has nothing to do.
    manifest, models = comfy_only(tmp_path)
    _safetensors(models / "loras" / "l.safetensors", LORA, 3)
    assert mlib(manifest, "adopt", str(models), "--app", "comfy", "-y").returncode == 0
    r = mlib(manifest, "override", "diffusion/sd15/l", "comfy", *change)
    assert r.returncode == 0, r.stderr
    r = mlib(manifest, "apply", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout


def test_adopting_the_same_folder_twice_changes_nothing(tmp_path: Path) -> None:
    # adoption.propose (fed by api.adopt): on a second run the copy that the first run left in
    # place ("identical to ... in the same app") is matched against the library and becomes an
    # override that moves the model's one place in this app to the copy's name: the manifest gets
    # `comfy: {filename: copy of base.safetensors}` and the link at base.safetensors, the name
    # workflows use, is planned for removal. Expected: a second adopt of an adopted folder proposes
    # nothing and leaves the manifest as it is.
    manifest, models = comfy_only(tmp_path)
    _safetensors(models / "checkpoints" / "base.safetensors", CHECKPOINT, 1, 4096)
    _safetensors(models / "checkpoints" / "copy of base.safetensors", CHECKPOINT, 1, 4096)
    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert r.returncode == 0, r.stdout + r.stderr
    adopted = manifest.read_text()
    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert "same bytes as" not in r.stdout, r.stdout
    assert manifest.read_text() == adopted


# --- adopt: what it moves and where the app finds it afterwards -------------------------------------


def test_a_hidden_folder_in_an_adopted_diffusers_folder(tmp_path: Path) -> None:
    # adoption.scan skips hidden entries and observe_source does not import them, so the folder
    # keeps `.cache/` (what `huggingface-cli download --local-dir` leaves in every folder) after
    # the move; executor._prune_empty then cannot remove it and the planned link fails ("something
    # is already there"). ComfyUI no longer finds the pipeline, and every later plan reports a
    # file_in_the_way conflict. Expected: the pipeline stays visible where it was (not adopted, or
    # moved whole), the hidden file is kept, and the plan converges.
    manifest, models = comfy_only(tmp_path)
    pipe = diffusers_folder(models)
    hidden = pipe / ".cache" / "huggingface" / "download" / "model_index.json.metadata"
    hidden.parent.mkdir(parents=True)
    hidden.write_text("abc\n")
    mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert (pipe / "model_index.json").is_file(), "ComfyUI lost the pipeline"
    assert hidden.is_file()
    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize(
    "name",
    [
        "汉服.safetensors",  # CJK names are common on Civitai
        "aux.safetensors",  # a Windows device name: fine on Linux
        "a\\b.safetensors",
        os.fsdecode(b"caf\xe9.safetensors"),  # a Latin-1 name from an old download
    ],
    ids=["cjk", "device-name", "backslash", "not-utf8"],
)
def test_one_odd_file_name_does_not_stop_the_adoption(tmp_path: Path, name: str) -> None:
    # adoption.propose turns every file into a manifest entry: clean_slug raises NamingError on a
    # name without ASCII letters (the whole `mlib adopt` ends in "mlib: error", even --dry-run),
    # and a `filename` override the manifest rejects (device name, backslash, not UTF-8) makes
    # manifest_edit.add_models refuse the whole edit. Expected: such a file is left in place (or
    # adopted under a name that works); the other files are adopted; exit 0.
    manifest, models = comfy_only(tmp_path)
    _safetensors(models / "checkpoints" / "base.safetensors", CHECKPOINT, 1)
    _safetensors(models / "loras" / name, LORA, 3)
    before = contents(models)
    code, out, err = run(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert code == 0, out + err
    assert (models / "checkpoints" / "base.safetensors").is_symlink(), "nothing was adopted"
    assert contents(models) == before


def test_adopting_the_models_folder_by_its_real_path(tmp_path: Path) -> None:
    # api.adopt: the scanned PATH is not checked against the target's models_dir. ComfyUI/models is
    # a symlink to another disk (common) and the user names the real folder: sources are recorded
    # under one spelling, links under the other, so the planner sees each file "in the way" of its
    # own link, and `adopt -y` still moves every file out. ComfyUI is left with no models.
    # Expected: every name ComfyUI saw still shows the same bytes (or adopt refuses the folder).
    manifest, _ = comfy_only(tmp_path)
    real = tmp_path / "disk" / "comfy-models"
    _safetensors(real / "loras" / "l.safetensors", LORA, 3)
    _safetensors(real / "checkpoints" / "c.safetensors", CHECKPOINT, 4)
    models = tmp_path / "ComfyUI" / "models"
    models.rmdir()
    models.symlink_to(real, target_is_directory=True)
    before = contents(models)
    mlib(manifest, "adopt", str(real), "--app", "comfy", "-y")
    assert contents(models) == before


def comfy_lists(models: Path, config: Path, folder: str) -> set[str]:
    """The names ComfyUI offers for ``folder``: its own folder plus, per section of
    extra_model_paths.yaml, ``base_path`` joined to each line (files listed recursively, links
    followed, as folder_paths.get_filename_list does)."""
    roots = [models / folder]
    if config.exists():
        for section in (yaml.safe_load(config.read_text()) or {}).values():
            base = config.parent / str(section.get("base_path", ""))
            roots += [base / line for line in str(section.get(folder, "")).split("\n") if line]
    names: set[str] = set()
    for root in roots:
        for dirpath, _, files in os.walk(root, followlinks=True):
            names.update(
                os.path.relpath(os.path.join(dirpath, f), root)
                for f in files
                if f.endswith(".safetensors")
            )
    return names


def test_adopting_into_a_config_mode_target_keeps_the_names_comfyui_lists(tmp_path: Path) -> None:
    # api.adopt / planner._config_wants: with `link: config` nothing is linked back; the adopted
    # files are moved out and ComfyUI sees them through extra_model_paths.yaml under the library's
    # cleaned names, at the top level (filename/folder overrides are ignored in config mode).
    # "My Lora (v2).safetensors" becomes "My_Lora_v2.safetensors", "sdxl/c.safetensors" becomes
    # "c.safetensors": every workflow naming them breaks, silently, exit 0. Expected: the names
    # ComfyUI lists do not change (adopt refuses a config target, or keeps the names).
    manifest, models = comfy_only(tmp_path, link="config")
    _safetensors(models / "loras" / "My Lora (v2).safetensors", LORA, 3)
    _safetensors(models / "checkpoints" / "sdxl" / "c.safetensors", CHECKPOINT, 4)
    config = tmp_path / "ComfyUI" / "extra_model_paths.yaml"
    before = {f: comfy_lists(models, config, f) for f in ("loras", "checkpoints")}
    assert before == {"loras": {"My Lora (v2).safetensors"}, "checkpoints": {"sdxl/c.safetensors"}}
    mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    assert {f: comfy_lists(models, config, f) for f in ("loras", "checkpoints")} == before


# --- adopt: declining it --------------------------------------------------------------------------


def test_a_declined_adoption_leaves_nothing_pending(tmp_path: Path) -> None:
    # api.undo_adopt restores mlib.yaml but not .mlib/adopting.json, which api.adopt wrote before
    # asking. The user declines ("Nothing changed"), yet the next `mlib apply` moves the webui's own
    # file to the trash (set_aside) and links over it: the adoption that was declined happens.
    # Expected: after a decline, the plan has no set_aside of that file.
    manifest, models = existing_install(tmp_path)
    mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    r = mlib(manifest, "adopt", str(tmp_path / "webui"), "--app", "webui")  # no -y, no terminal
    assert r.returncode == 1 and "Nothing changed" in r.stdout
    plan = json.loads(mlib(manifest, "plan", "--json").stdout)
    assert [a["path"] for a in plan["actions"] if a["kind"] == "set_aside"] == []


def test_a_declined_adoption_after_another_apply_keeps_the_files_visible(tmp_path: Path) -> None:
    # api.adopt writes the manifest without the library lock and api.undo_adopt writes the old text
    # back blindly. While `mlib adopt` waits for its confirmation, any other `mlib apply` (another
    # terminal, a cron job) applies the pending adoption: the files move into the library and are
    # linked back. The user then declines: undo_adopt drops the entries of models that were moved,
    # and the next apply unlinks them ("no longer wanted"): ComfyUI loses every adopted file.
    # Expected: each name still shows its bytes after the decline and another apply.
    manifest, models = comfy_only(tmp_path)
    _safetensors(models / "loras" / "l.safetensors", LORA, 3)
    _safetensors(models / "checkpoints" / "c.safetensors", CHECKPOINT, 4)
    before = contents(models)
    report = api.adopt(manifest, models, "comfy")  # what `mlib adopt` does before asking
    mlib(manifest, "apply", "-y", "--lock-timeout", "1")  # meanwhile, elsewhere
    api.undo_adopt(manifest, report)  # the user answers no
    mlib(manifest, "apply", "-y", "--lock-timeout", "1")
    assert contents(models) == before


def test_adopt_counts_only_done_steps_as_applied(tmp_path: Path) -> None:
    # cli.adopt prints "Applied {steps - failed} of {steps}", so skipped steps count as applied
    # (cli.apply counts outcome == done). Here the import of `base` fails (a folder of the user's
    # stands where its model folder would go), which skips its index_upsert and link: 3 of N are
    # not applied. Expected: "Applied N-3 of N actions; 1 failed".
    manifest, models = comfy_only(tmp_path)
    _safetensors(models / "checkpoints" / "base.safetensors", CHECKPOINT, 1)
    notes = tmp_path / "lib" / "diffusion" / "sd15" / "base" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    r = mlib(manifest, "adopt", str(models), "--app", "comfy", "-y")
    found = re.search(r"Applied (\d+) of (\d+) actions; (\d+) failed", r.stdout)
    assert found is not None, r.stdout + r.stderr
    applied, total, failed = map(int, found.groups())
    assert failed == 1 and (models / "checkpoints" / "base.safetensors").is_file()
    assert applied == total - 3, r.stdout


# --- link: config ---------------------------------------------------------------------------------


def config_project(base: Path, *names: str) -> tuple[Path, Path]:
    """A `link: config` ComfyUI target and one local LoRA per name (copied), not applied yet."""
    manifest, _ = comfy_only(base, link="config")
    for i, name in enumerate(names):
        add_lora(manifest, name, 20 + i)
    return manifest, base / "ComfyUI" / "extra_model_paths.yaml"


def add_lora(manifest: Path, name: str, seed: int) -> None:
    """A local LoRA file and its manifest entry (imported by copy)."""
    _safetensors(manifest.parent / "dl" / f"{name}.safetensors", LORA, seed)
    doc = read_yaml(manifest)
    source = {"path": f"dl/{name}.safetensors"}
    entry = {"name": name, "type": "diffusion", "family": "sd15", "kind": "lora", "source": source}
    doc["models"].append(entry)
    write_yaml(manifest, doc)


def test_a_config_file_with_a_duplicate_key_is_no_traceback(tmp_path: Path) -> None:
    # executor._write_config loads the file with ruamel's round-trip loader, which raises
    # DuplicateKeyError (not OSError or ReconcilerError) where observe.observe_config's
    # yaml.safe_load, like ComfyUI, takes the last value. The plan is fine; apply dies with a
    # traceback halfway through its actions. Expected: a conflict or a one-line "mlib: ..." error.
    manifest, config = config_project(tmp_path, "x")
    mine = "a111:\n  base_path: /webui\n  vae: models/VAE\n  vae: models/VAE2\n"
    config.write_text(mine)
    assert mlib(manifest, "plan").returncode == 0
    r = mlib(manifest, "apply", "-y")
    assert "Traceback" not in r.stderr, r.stderr[-1500:]


def test_a_comment_after_mlibs_section_survives_a_rewrite(tmp_path: Path) -> None:
    # executor._write_config replaces mlib's section with a new mapping; ruamel keeps a comment
    # that follows a mapping on that mapping's last value, so the user's comment above the section
    # they added after mlib's (mlib appends its section at the end) is dropped when mlib rewrites
    # or removes its section. README: "every other section and comment of the file stays".
    manifest, config = config_project(tmp_path, "x")
    assert mlib(manifest, "apply", "-y").returncode == 0
    note = "# my own models on the NAS: keep this note\n"
    config.write_text(config.read_text() + note + "nas:\n  base_path: /mnt/nas\n  loras: loras\n")
    add_lora(manifest, "y", 30)
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert note in config.read_text()


#: User sections as ComfyUI's own extra_model_paths.yaml.example writes them (4-space indents,
#: indented literal blocks), and a long Windows-style path.
COMFY_EXAMPLE = """\
#config for a1111 ui
#all you have to do is change the base_path to where yours is installed
a111:
    base_path: path/to/stable-diffusion-webui/

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
"""
LONG_PATH = (
    "other:\n  base_path: D:/AI/Stable Diffusion/stable-diffusion-webui-forge/webui/models/"
    "Stable-diffusion/My Checkpoints\n"
)


@pytest.mark.parametrize("mine", [COMFY_EXAMPLE, LONG_PATH], ids=["comfy-example", "long-line"])
def test_other_sections_are_kept_as_written(tmp_path: Path, mine: str) -> None:
    # executor._write_config re-emits the whole document with ruamel's defaults: 2-space indents
    # and 80-column folding, so ComfyUI's own example layout is re-indented and a long base_path is
    # folded onto a second line (with a trailing space). Expected: the user's text unchanged.
    manifest, config = config_project(tmp_path, "x")
    config.write_text(mine)
    assert mlib(manifest, "apply", "-y").returncode == 0
    assert config.read_text().startswith(mine), config.read_text()


def test_a_symlinked_extra_model_paths_stays_a_symlink(tmp_path: Path) -> None:
    # executor._write_config writes with fsops.atomic_write beside the path, which renames a new
    # file over the user's symlink (to a dotfiles checkout, a shared config...): their link is
    # gone and the file it pointed to never gets mlib's section. Expected: the symlink is kept
    # (its target updated), or a conflict is reported.
    manifest, config = config_project(tmp_path, "x")
    shared = tmp_path / "dotfiles" / "extra_model_paths.yaml"
    shared.parent.mkdir()
    shared.write_text("other:\n  base_path: /x\n")
    config.symlink_to(shared)
    mlib(manifest, "apply", "-y")
    assert config.is_symlink(), "the user's symlink was replaced by a file"


def test_two_config_targets_sharing_one_file(tmp_path: Path) -> None:
    # manifest._Reader._apps accepts two `link: config` targets whose `config:` is the same file;
    # both keep "their" section named mlib in it, so each apply rewrites it for one target and the
    # next plan wants it back for the other: plan/apply never converge (and one app sees the other
    # app's models). Expected: validate rejects the shared file, or apply converges.
    manifest, _ = config_project(tmp_path, "x", "y")
    doc = read_yaml(manifest)
    shared = {"link": "config", "config": "shared/extra_model_paths.yaml"}
    doc["apps"] = {
        "a": {"app": "comfyui", "version": "0.3.62", "models_dir": "A/models", **shared},
        "b": {"app": "comfyui", "version": "0.3.62", "models_dir": "B/models", **shared},
    }
    doc["models"][0]["apps"] = {"b": False}
    write_yaml(manifest, doc)
    if mlib(manifest, "validate").returncode != 0:
        return  # refused up front: fine
    mlib(manifest, "apply", "-y")
    r = mlib(manifest, "plan", "--detailed-exitcode")
    assert r.returncode == 0, r.stdout


# --- add / override -------------------------------------------------------------------------------


def test_add_to_a_manifest_whose_models_is_a_mapping(tmp_path: Path) -> None:
    # manifest_edit.add_models appends to whatever `models:` holds before validating: `models: {}`
    # (a typo for []) ends in AttributeError and a traceback. Expected: "mlib: ..." problems.
    manifest, _ = comfy_only(tmp_path)
    manifest.write_text(manifest.read_text().replace("models: []", "models: {}"))
    before = manifest.read_bytes()
    r = mlib(
        manifest, "add", "hf:org/repo", "--type", "diffusion", "--family", "sdxl", "--kind", "lora"
    )
    assert "Traceback" not in r.stderr and "mlib:" in r.stderr, r.stderr[-800:]
    assert manifest.read_bytes() == before


def test_add_with_an_empty_source_is_refused(tmp_path: Path) -> None:
    # manifest_edit.parse_source takes "" (an unset shell variable: mlib add "$F") as the path "."
    # and writes `source: {path: .}`: the manifest's own folder, library included, as a model to
    # import. Expected: a clear error, mlib.yaml byte-identical.
    manifest, _ = comfy_only(tmp_path)
    before = manifest.read_bytes()
    r = mlib(manifest, "add", "", "--type", "diffusion", "--family", "sdxl", "--kind", "lora")
    assert r.returncode != 0 and manifest.read_bytes() == before, manifest.read_text()


def test_override_changes_only_the_lines_it_edits(tmp_path: Path) -> None:
    # manifest_edit._load sets yaml.width = 100, so every long flow line of *other* models is
    # re-wrapped (with a trailing space) when any model is edited. README: "only the edited lines
    # change". Expected: the first model's lines are byte-identical after overriding the second.
    manifest, _ = comfy_only(tmp_path)
    first = (
        "models:\n"
        "  - name: SDXL Base\n"
        "    type: diffusion\n"
        "    family: sdxl\n"
        "    kind: checkpoint\n"
        "    source: {hf: stabilityai/stable-diffusion-xl-base-1.0, files: [sd_xl_base_1.0.safetensors, sd_xl_base_1.0_0.9vae.safetensors], exclude: ['*fp16*']}\n"
        "    tags: [base, sdxl, official, stabilityai, '1024px', photoreal, general-purpose, widely-used, default]\n"
    )
    second = "  - {name: Y, type: diffusion, family: sdxl, kind: lora, source: {hf: org/y}}\n"
    manifest.write_text(manifest.read_text().replace("models: []\n", first + second))
    assert mlib(manifest, "validate").returncode == 0
    r = mlib(manifest, "override", "diffusion/sdxl/y", "comfy", "--disable")
    assert r.returncode == 0, r.stderr
    assert first in manifest.read_text(), manifest.read_text()
