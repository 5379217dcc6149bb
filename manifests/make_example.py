"""Make the files ``manifests/example.yaml`` uses: tiny valid model files and an empty ComfyUI.

    python manifests/make_example.py [FOLDER]      (default: example/ beside manifests/)

Writes ``FOLDER/downloads/`` (the "user's downloads": small real .safetensors files and a diffusers
bundle) and ``FOLDER/ComfyUI/models/``. Idempotent; it only ever writes inside FOLDER, and never
touches the library that ``mlib apply`` builds there.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path


def safetensors(tensors: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> bytes:
    """A valid safetensors file of float32 zeros: 8-byte header length, JSON header, data."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data 8-byte aligned, as the format recommends
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def main(folder: Path) -> None:
    downloads = folder / "downloads"
    write(
        downloads / "tiny-sd-checkpoint.safetensors",
        safetensors(
            {"model.diffusion_model.input_blocks.0.0.weight": (32, 4, 3, 3),
             "first_stage_model.decoder.conv_in.weight": (8, 4, 3, 3),
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (64, 16)},
            {"format": "pt", "note": "mlib example checkpoint"},
        ),
    )  # fmt: skip
    write(
        downloads / "tiny detail lora v2.safetensors",
        safetensors(
            {"lora_unet_down_blocks_0_attentions_0.lora_down.weight": (4, 32),
             "lora_unet_down_blocks_0_attentions_0.lora_up.weight": (32, 4)},
            {"ss_network_module": "networks.lora", "note": "mlib example lora"},
        ),
    )  # fmt: skip
    write(
        downloads / "Tiny-T5-Encoder.safetensors",
        safetensors({"encoder.block.0.layer.0.SelfAttention.q.weight": (16, 16)}, {}),
    )
    bundle = downloads / "tiny-diffusers-pipeline"
    write(
        bundle / "model_index.json",
        json.dumps(
            {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet"]}
        ).encode(),
    )
    write(bundle / "unet" / "config.json", b'{"in_channels": 4}\n')
    write(
        bundle / "unet" / "diffusion_pytorch_model.safetensors",
        safetensors({"conv_in.weight": (8, 4, 3, 3)}, {}),
    )
    (folder / "ComfyUI" / "models").mkdir(parents=True, exist_ok=True)
    print(
        f"example sources in {downloads}; ComfyUI models folder at {folder / 'ComfyUI' / 'models'}"
    )


if __name__ == "__main__":
    main(
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent.parent / "example"
    )
