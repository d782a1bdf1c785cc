"""Copy the final model of a `default` run into occmllm's package data, where `VLM.load_default()` finds it.

    python train/ship_default.py runs/default            # runs/default/final -> occmllm/default_model/weights
Refuses a folder that is not a trained default-model folder or that is over 30 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_BYTES = 30 * 2**20
FILES = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
         "tokenizer_config.json", "chat_template.jinja", "occmllm_default.json", "special_tokens_map.json",
         "preprocessor_config.json", "occmllm_expert.json")


def main(argv: list[str] | None = None) -> int:
    from occmllm.default_model import WEIGHTS_DIR, read_marker

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of `train/run_all.py --preset default` (or its final/)")
    args = parser.parse_args(argv)
    final = args.run / "final" if (args.run / "final").is_dir() else args.run
    marker = read_marker(final)
    if marker is None or not marker.get("trained"):
        print(f"error: {final}: not a trained default-model folder (no occmllm_default.json with trained: true)",
              file=sys.stderr)
        return 2
    files = [final / name for name in FILES if (final / name).is_file()]
    size = sum(f.stat().st_size for f in files)
    if size > MAX_BYTES:
        print(f"error: {final}: {size / 2**20:.1f} MB is over the 30 MB package-data limit", file=sys.stderr)
        return 2
    tmp = WEIGHTS_DIR.with_name(WEIGHTS_DIR.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, tmp / f.name)
    shipped_expert = name_shipped_expert(tmp)
    shutil.rmtree(WEIGHTS_DIR, ignore_errors=True)
    tmp.rename(WEIGHTS_DIR)
    print(f"copied {len(files)} files ({size / 2**20:.1f} MB) from {final} to {WEIGHTS_DIR}")
    from occmllm.expert_renders import expert_for_model

    spec, note = expert_for_model(WEIGHTS_DIR)
    print(f"the app and the command lines will use the 3D expert {spec} with it" + (f": {note}" if note else ""))
    if shipped_expert:
        print(f"(it was trained on the renders of the shipped expert {shipped_expert}; occmllm_expert.json names it)")
    return 0


def name_shipped_expert(folder: Path) -> str | None:
    """When the model's occmllm_expert.json records a shipped expert's weights (matched by SHA-256), write that
    expert's name in place of the folder it had on the training machine (a GPU box's absolute path means nothing in
    the package); the digest stays, and it is what the app matches. Returns the name, or None."""
    import json

    from occmllm.expert_renders import MODEL_EXPERT, shipped_expert_name

    record_file = folder / MODEL_EXPERT
    if not record_file.is_file():
        return None
    record = json.loads(record_file.read_text())
    name = shipped_expert_name(record.get("weights_sha256"))
    if name is not None:
        record["expert"] = name
        record_file.write_text(json.dumps(record, indent=1) + "\n")
    return name


if __name__ == "__main__":
    sys.exit(main())
