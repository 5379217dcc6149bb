"""Frozen values shared by every layer: the manifest's desired state, metadata and overrides.

Nothing here does I/O or validation; loaders build these values only from checked input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class ModelType(StrEnum):
    LLM = "llm"
    DIFFUSION = "diffusion"
    EMBEDDING = "embedding"
    AUDIO = "audio"
    VISION = "vision"
    OTHER = "other"


class LinkMode(StrEnum):
    """How a model appears inside an app's models folder."""

    AUTO = "auto"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    COPY = "copy"
    CONFIG = "config"  # no links: a section of ComfyUI's extra_model_paths.yaml names the folders


class ImportMode(StrEnum):
    """How a local source file enters the library."""

    COPY = "copy"
    HARDLINK = "hardlink"
    MOVE = "move"


class SourceKind(StrEnum):
    HF = "hf"
    URL = "url"
    PATH = "path"


#: Kinds the bundled translations know; translations may add more.
KNOWN_KINDS: tuple[str, ...] = (
    "checkpoint", "lora", "vae", "controlnet", "embedding", "upscaler", "text_encoder",
    "clip_vision", "diffusion_model", "ipadapter", "style_model", "gligen", "hypernetwork",
    "photomaker", "vae_approx", "audio_encoder", "diffusers", "gguf", "other",
)  # fmt: skip


@dataclass(frozen=True)
class HfSource:
    repo: str
    revision: str = "main"
    files: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kind: SourceKind = field(default=SourceKind.HF, init=False)


@dataclass(frozen=True)
class UrlSource:
    url: str
    filename: str | None = None
    kind: SourceKind = field(default=SourceKind.URL, init=False)


@dataclass(frozen=True)
class LocalSource:
    path: str
    mode: ImportMode = ImportMode.COPY
    kind: SourceKind = field(default=SourceKind.PATH, init=False)


Source = HfSource | UrlSource | LocalSource


@dataclass(frozen=True)
class AppOverride:
    """What one model asks of one app target. ``versions`` is a canonical range string."""

    target: str
    enabled: bool = True
    versions: str = "*"
    folder: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class AppTarget:
    name: str
    app: str
    version: str
    variant: str
    models_dir: Path
    link: LinkMode = LinkMode.AUTO
    #: ``link: config``: the extra_model_paths.yaml that mlib keeps its section in.
    config: Path | None = None

    @property
    def config_file(self) -> Path:
        """The extra_model_paths.yaml of ``link: config``: ``config:``, else the one ComfyUI
        reads by itself, in its folder (the parent of ``models_dir``)."""
        return self.config or self.models_dir.parent / "extra_model_paths.yaml"


@dataclass(frozen=True)
class ModelSpec:
    """One model as the manifest wants it."""

    id: str
    name: str
    cleaned_name: str
    type: ModelType
    family: str
    kind: str
    source: Source
    sha256: str | None = None
    tags: tuple[str, ...] = ()
    apps: tuple[AppOverride, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    library: Path
    translations: tuple[Path, ...]
    apps: tuple[AppTarget, ...]
    models: tuple[ModelSpec, ...]

    def app(self, name: str) -> AppTarget | None:
        return next((a for a in self.apps if a.name == name), None)


@dataclass(frozen=True)
class FileEntry:
    """One file of a model, by its path relative to the model folder."""

    path: str
    size: int
    sha256: str
    blake3: str


@dataclass(frozen=True)
class Hashes:
    sha256: str
    blake3: str


@dataclass(frozen=True)
class Metadata:
    """The canonical record of one model (``metadata.json``)."""

    id: str
    official_name: str
    cleaned_name: str
    model_type: ModelType
    family: str
    kind: str
    source: Source
    files: tuple[FileEntry, ...]
    added_at: str
    updated_at: str
    tags: tuple[str, ...] = ()
    schema_version: int = 1
    #: What a remote source resolved to when it was downloaded: ``hf:<repo>@<commit sha>`` or the
    #: final URL; empty for a local source.
    origin: str = ""

    @property
    def primary(self) -> FileEntry | None:
        """The largest file: the one a single-file model is, and the weights of a bundle."""
        if not self.files:
            return None
        return max(self.files, key=lambda f: (f.size, f.path))

    @property
    def hashes(self) -> Hashes | None:
        primary = self.primary
        return None if primary is None else Hashes(primary.sha256, primary.blake3)

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Overrides:
    """Per-app overrides of one model (``overrides.json``), written from the manifest."""

    apps: tuple[AppOverride, ...] = ()
    schema_version: int = 1

    def for_target(self, name: str) -> AppOverride:
        return next((a for a in self.apps if a.target == name), AppOverride(target=name))
