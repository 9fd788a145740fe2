"""``python -m wav2emo.env``: what this machine runs wav2emo with, for bug reports and first-day checks.

Like ``transformers env``: versions of the stack, whether they fit each other, CUDA and the GPUs seen, the
data and cache folders with their sizes, and whether a backbone is available without the network.
Nothing here downloads or writes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from wav2emo import __version__
from wav2emo.compat import environment_problems, import_problem, installed_version

# Distribution names (as pip knows them) of the stack a bug report needs.
PACKAGES = (
    "torch", "torchaudio", "transformers", "lightning", "torchmetrics", "hydra-core", "omegaconf", "opensmile",
    "wandb", "soundfile", "numpy", "scikit-learn", "huggingface-hub", "pandas",
)
DEFAULT_BACKBONES = ("facebook/wav2vec2-base",)
ENV_VARS = (
    "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "WAV2EMO_DATA_DIR", "WAV2EMO_CACHE_DIR", "WAV2EMO_LOG_DIR",
    "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "WANDB_MODE", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent), read from metadata without importing the packages."""
    return {name: installed_version(name) for name in names}


def default_dirs() -> dict[str, Path]:
    """The folders conf/paths/default.yaml resolves to, from the same environment variables."""
    home = Path.home() / ".cache" / "wav2emo"
    return {
        "data_dir": Path(os.environ.get("WAV2EMO_DATA_DIR", home / "data")).expanduser(),
        "cache_dir": Path(os.environ.get("WAV2EMO_CACHE_DIR", home / "cache")).expanduser(),
        "log_dir": Path(os.environ.get("WAV2EMO_LOG_DIR", "outputs")).expanduser(),
    }


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                pass
    return total


def describe_folder(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"path": str(path), "exists": False}
    return {"path": str(path), "exists": True, "size_mb": round(folder_size(path) / 2**20, 1)}


def torch_info() -> dict[str, Any]:
    """Build, threads, CUDA and the GPUs torch sees (an import failure is reported, not raised)."""
    try:
        import torch
    except Exception as e:  # noqa: BLE001 - a broken install is exactly what this command reports
        return {"error": f"{type(e).__name__}: {e}"}
    info: dict[str, Any] = {
        "build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only",
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "gpus": [],
    }
    if info["cuda_available"]:
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                 "capability": f"{p.major}.{p.minor}"})
    return info


def backbone_family(config_path: Any) -> str:
    """The registered backbone family of a config.json (its model_type), or why there is none."""
    if not isinstance(config_path, (str, Path)) or not Path(config_path).is_file():
        return "unknown (no config.json)"
    try:
        import wav2emo.backbones.families  # noqa: F401 - registers the built-in families
        from wav2emo.backbones.registry import family_for

        model_type = json.loads(Path(config_path).read_text()).get("model_type")
        return family_for(model_type).family
    except Exception as e:  # noqa: BLE001 - a report, never a crash
        return f"not supported ({str(e).split(';')[0]})"


def backbone_offline(ref: str) -> dict[str, Any]:
    """Whether ``ref`` (a hub id or a folder) can be loaded with the network off, and its family."""
    path = Path(ref).expanduser()
    if path.is_dir():
        has_config = (path / "config.json").is_file()
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        return {"backbone": ref, "kind": "folder", "available": has_config and has_weights,
                "family": backbone_family(path / "config.json")}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as e:
        return {"backbone": ref, "kind": "hub", "available": False, "why": str(e)}
    config = try_to_load_from_cache(ref, "config.json")
    weights = [try_to_load_from_cache(ref, name) for name in ("model.safetensors", "pytorch_model.bin")]
    available = isinstance(config, str) and any(isinstance(w, str) for w in weights)
    out: dict[str, Any] = {"backbone": ref, "kind": "hub", "available": available}
    if isinstance(config, str):
        out["family"] = backbone_family(config)
    if not available:
        out["how"] = "run once with internet access (e.g. python -m wav2emo.extract features=...), or point " \
                     "`features.ssl.backbone` at a folder written by save_pretrained"
    return out


# The heaviest pure-Python import of a training run: Lightning imports torch._dynamo, which imports sympy.
BYTECODE_PROBES = ("torch", "torch._dynamo", "sympy", "lightning")


def module_origin(name: str) -> str | None:
    """The file a module would load from, found without importing it (None when it is not installed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return getattr(spec, "origin", None)


def bytecode_cache(probes: tuple[str, ...] = BYTECODE_PROBES) -> dict[str, Any]:
    """Whether Python finds compiled bytecode for the training stack, or compiles it from source in every process.

    pip writes ``__pycache__`` when it installs, and Python writes it at the first import; an environment built
    without it and run with ``PYTHONDONTWRITEBYTECODE`` set (some container images) compiles torch's and
    Lightning's Python in every process: seconds of start-up each time (benchmarks/reports/issue25.md).
    Nothing is imported: the modules are found, not run.
    """
    import importlib.util

    origins = {name: module_origin(name) for name in probes}
    missing = [name for name, origin in origins.items() if origin and origin.endswith(".py")
               and not Path(importlib.util.cache_from_source(origin)).is_file()]
    writes = not sys.dont_write_bytecode
    torch_init = origins.get("torch")
    return {"writes_bytecode": writes, "pycache_prefix": sys.pycache_prefix, "not_compiled": missing,
            "compiles_every_process": bool(missing) and not writes,
            "site_packages": str(Path(torch_init).parent.parent) if torch_init else None}


def bytecode_hint(cache: dict[str, Any]) -> str | None:
    """One line a person can act on when every process compiles the stack from source (None otherwise)."""
    if not cache["compiles_every_process"]:
        return None
    return (f"no compiled bytecode for {', '.join(cache['not_compiled'])} and PYTHONDONTWRITEBYTECODE is set: every "
            f"process compiles them from source (7 s more start-up measured on an H100 image: 14.9 s against "
            f"7.8 s); compile once with `python -m compileall -q -j 0 "
            f"{cache['site_packages'] or '<site-packages>'}`, or unset "
            f"PYTHONDONTWRITEBYTECODE (with PYTHONPYCACHEPREFIX=<a writable folder> where site-packages is read-only)")


def collect(backbones: tuple[str, ...] = DEFAULT_BACKBONES) -> dict[str, Any]:
    problems = environment_problems()
    if not problems:
        problem = import_problem("torchaudio")
        problems = [problem] if problem else []
    return {
        "wav2emo": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
        "problems": problems,
        "torch": torch_info(),
        "folders": {k: describe_folder(v) for k, v in default_dirs().items()},
        "backbones": [backbone_offline(b) for b in backbones],
        "environment": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "bytecode": bytecode_cache(),
    }


def render(info: dict[str, Any]) -> str:
    lines = [f"wav2emo {info['wav2emo']}", f"Python {info['python']}", f"Platform {info['platform']}, "
             f"{info['cpu_count']} CPUs", "", "Packages:"]
    lines += [f"  {k}: {v or 'not installed'}" for k, v in info["packages"].items()]
    t = info["torch"]
    lines += ["", "torch:"]
    if "error" in t:
        lines.append(f"  import failed: {t['error']}")
    else:
        lines.append(f"  build: {t['build']}; threads {t['threads']} (interop {t['interop_threads']})")
        lines.append(f"  CUDA available: {t['cuda_available']}" + (f", cuDNN {t['cudnn']}" if t.get("cudnn") else ""))
        lines += [f"  GPU {g['index']}: {g['name']}, {g['memory_gib']} GiB, compute {g['capability']}" for g in t["gpus"]]
    lines += ["", "Folders:"]
    for k, f in info["folders"].items():
        lines.append(f"  {k}: {f['path']} " + (f"({f['size_mb']} MB)" if f["exists"] else "(does not exist yet)"))
    lines += ["", "Backbones without the network:"]
    for b in info["backbones"]:
        family = f", family {b['family']}" if b.get("family") else ""
        lines.append(f"  {b['backbone']} ({b['kind']}{family}): {'available' if b['available'] else 'NOT available'}"
                     + (f"; {b['how']}" if b.get("how") else ""))
    if info["environment"]:
        lines += ["", "Environment:"] + [f"  {k}={v}" for k, v in info["environment"].items()]
    if "bytecode" in info:
        hint = bytecode_hint(info["bytecode"])
        lines += ["", "Python bytecode:",
                  f"  {hint}" if hint else "  compiled bytecode found or written as modules load"]
    lines += ["", "Problems:"] + ([f"  {p}" for p in info["problems"]] or ["  none found"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m wav2emo.env",
        description="Print what wav2emo runs with (paste this into bug reports). Downloads and writes nothing.",
    )
    parser.add_argument("--backbone", action="append", default=None, metavar="ID_OR_FOLDER",
                        help="a backbone to check for offline use (repeatable; default: facebook/wav2vec2-base)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    info = collect(tuple(args.backbone) if args.backbone else DEFAULT_BACKBONES)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 1 if info["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
