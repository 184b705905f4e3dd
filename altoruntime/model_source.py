"""Where a task's `model` comes from: a local model folder, a .gguf file, a hub id in the local
Hugging Face cache, or a bare name (a label the `--backbone` backbone trains under).

Nothing here touches the network: a hub id is looked up with `local_files_only=True`, and one
that is not cached is an error the user can fix by downloading it first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # org/name, as the hub spells them


@dataclass(frozen=True)
class ModelSource:
    """A model to load: `folder` (with `gguf_file` in it, or config.json and weights) and the name
    exported adapters give as `base_model_name_or_path` (the resolved path, or the hub id)."""

    folder: Path
    gguf_file: str | None
    name: str


def _looks_like_path(model: str, path: Path) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.lower().endswith(".gguf") or path.exists()


def resolve_model(model: str, base: Path) -> ModelSource | None:
    """The source `model` names (relative paths from `base`, the workload file's folder), or None
    for a bare name. A path that is not a model, or a hub id not in the cache: ValueError (one line)."""
    path = Path(model).expanduser()
    path = path if path.is_absolute() else base / path
    if _looks_like_path(model, path):
        if not path.exists():
            raise ValueError(f"no such model folder or .gguf file: {path}")
        path = path.resolve()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ValueError(f"{path} is a file but not a .gguf; give a model folder (config.json and "
                                 "weights, as save_pretrained writes) or a .gguf file")
            return ModelSource(path.parent, path.name, str(path))
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} has no config.json; a model folder is what save_pretrained writes")
        return ModelSource(path, None, str(path))
    if "/" in model:
        if not HUB_ID.fullmatch(model):
            raise ValueError(f"{model!r} is neither a local model folder / .gguf file nor a hub id (org/name)")
        from transformers.utils import cached_file

        try:
            found = cached_file(model, "config.json", local_files_only=True)
        except (OSError, ValueError):  # not cached (transformers words it as a connection problem)
            found = None
        if found is None:
            raise ValueError(f"no such model folder or .gguf file ({path}), and hub id {model!r} is not in the local "
                             f"Hugging Face cache (alto run never downloads; fetch it first: hf download {model})")
        return ModelSource(Path(found).parent, None, model)
    return None
