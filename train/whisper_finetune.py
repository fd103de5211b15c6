"""Fine-tune a Whisper CTC bundle on your own audio in one command (``asr-finetune``).

    asr-finetune --train my_train.jsonl:3 --dev my_dev.jsonl --out models/my-model --max-hours 0.5

Each manifest line is ``{"audio": path, "text": transcript}`` (paths relative to the manifest;
any format soundfile or FFmpeg reads). The three steps of ``asr-train-head`` run in turn, each
resumable: the manifests' encoder states before the bundle's first tuned block are cached under
``--cache-root`` (one folder per manifest, named by its file name and path); the bundle's tuned blocks and
CTC head train on them from where the bundle left them, at half its last recipe steps' rates, with
SpecAugment, the dev sets' greedy WER scored first and every ``--eval-minutes``; the best
checkpoint is exported to ``--out`` with the bundle's decoder adapter, second-pass settings and
language model kept (``asr-train-head export --carry-from``), so every decoder serves.

Your data alone can teach the head your speakers and words at the cost of others; add some of the
recipe's manifests to ``--train`` to keep them (``docs/finetune.md`` shows both).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.asr.bundle_files import BundleError, read_config
from app.asr.configs import WhisperCTCConfig
from app.config import DEFAULT_MODEL_PATH
from train.config import HeadConfig, add_flags, given
from train.data.dataset import parse_manifest_arg
from train.whisper_cache import CacheConfig, run_cache
from train.whisper_head import run_export, run_train

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """Settings of ``asr-finetune``."""

    train: list[str] = field(default_factory=list)  # manifests, 'path[:repeats]'
    dev: list[str] = field(default_factory=list)  # manifests; their mean greedy WER picks the checkpoint
    out: str = "models/my-model"  # the bundle written (its folder name is its model name)
    base: str = str(DEFAULT_MODEL_PATH)  # the bundle to start from (the server's default)
    run: str = ""  # checkpoints and log (default: runs/<out's name>)
    cache_root: str = "data/cache/finetune"
    max_hours: float = 0.5  # wall-clock budget over all resumes; the cosine decay spans it
    max_steps: int = 0  # 0: no step limit
    lr_head: float = 1e-4  # half the shipped bundle's last steps' peak rates: as much gain, less lost elsewhere
    lr_blocks: float = 2.5e-5
    warmup_steps: int = 50
    head_only: bool = False  # train the CTC head alone, the bundle's encoder blocks as they are
    eval_minutes: float = 5.0
    threads: int = 2
    seed: int = 1234
    resume: bool = False  # continue the run's last.pt until max_hours in total


def set_names(manifests: list[str]) -> dict[Path, str]:
    """Each manifest's cache folder name: its file name without the suffix and a digest of its full
    path, so that two datasets' ``train.jsonl`` never share a folder."""
    names: dict[Path, str] = {}
    for arg in manifests:
        path, _ = parse_manifest_arg(arg)
        if not path.is_file():
            raise SystemExit(f"{path}: no such manifest")
        full = path.resolve()
        names[full] = f"{path.stem}-{hashlib.sha256(str(full).encode()).hexdigest()[:8]}"
    return names


def head_config(cfg: FinetuneConfig, model: WhisperCTCConfig, names: dict[Path, str]) -> HeadConfig:
    """The ``asr-train-head train`` run: the cached sets with their repeats, from ``cfg.base``."""

    def folder(arg: str) -> Path:  # the cache folder itself, not a name a folder in the working directory could shadow
        return Path(cfg.cache_root).resolve() / names[parse_manifest_arg(arg)[0].resolve()]

    return HeadConfig(
        train=[f"{folder(a)}:{parse_manifest_arg(a)[1]}" for a in cfg.train],
        dev=[str(folder(a)) for a in cfg.dev],
        cache_root=cfg.cache_root,
        out=cfg.run or f"runs/{Path(cfg.out).name}",
        name=Path(cfg.out).name,
        tuned_layers=list(model.tuned_layers),
        init_bundle=cfg.base,
        head_only=cfg.head_only,
        resume=cfg.resume,
        threads=cfg.threads,
        seed=cfg.seed,
        lr_head=cfg.lr_head,
        lr_blocks=cfg.lr_blocks,
        warmup_steps=cfg.warmup_steps,
        max_hours=cfg.max_hours,
        max_steps=cfg.max_steps,
        eval_minutes=cfg.eval_minutes,
    )


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Cache, train and export; return a summary: the dev WER before and after, the bundle written."""
    if not cfg.train or not cfg.dev:
        raise SystemExit("asr-finetune needs --train and --dev manifests")
    try:
        config = read_config(cfg.base)
    except BundleError as exc:
        raise SystemExit(str(exc)) from exc
    if not isinstance(config.model, WhisperCTCConfig):
        raise SystemExit(f"{cfg.base} is not a Whisper CTC bundle; fine-tune it with asr-train")
    names = set_names([*cfg.train, *cfg.dev])
    for path, name in names.items():
        run_cache(
            CacheConfig(
                sets=[f"{name}={path}"],
                root=cfg.cache_root,
                tuned_layers=list(config.model.tuned_layers),
                threads=cfg.threads,
            )
        )
    head = head_config(cfg, config.model, names)
    state = run_train(head)
    run_dir = Path(head.out)
    out = run_export(run_dir / "best.pt", Path(cfg.out), Path(cfg.cache_root), carry_from=Path(cfg.base))
    dev = [{**h, "hours": round(h["hours"], 3)} for h in state.history if "mean" in h]
    summary = {
        "bundle": str(out),
        "run": str(run_dir),
        "steps": state.step,
        "hours": round(state.train_seconds / 3600, 3),
        "dev_wer_before": dev[0] if dev and dev[0]["step"] == 0 else None,
        "dev_wer_best": min(dev, key=lambda h: h["mean"]) if dev else None,
    }
    (run_dir / "finetune.json").write_text(json.dumps({"config": asdict(cfg), **summary}, indent=2) + "\n")
    logger.info(
        "fine-tuned %s into %s: dev WER %s -> %s", cfg.base, out, summary["dev_wer_before"], summary["dev_wer_best"]
    )
    return summary


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``asr-finetune ...``; return its summary."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, FinetuneConfig)
    return run_finetune(FinetuneConfig(**given(parser.parse_args(argv))))


def main() -> None:
    """Console entry point of ``asr-finetune``: prints the summary as JSON."""
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
