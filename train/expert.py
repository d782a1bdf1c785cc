"""Stage 0: the 3D expert (occmllm.recon's occupancy network), trained on the dataset's photos and shapes.

    python train/run_all.py --preset smoke --stages 0
    (the same as: python -m occmllm.recon.train, with the preset's settings)
A dataset without shapes (e.g. an export from the app) cannot train it: the stage then uses the expert shipped in
occmllm/recon/weights and says so. `stages.0.shipped=true` (the default preset) uses the shipped expert without
training one: it was trained on the GPU by occmllm.recon's own recipe and costs minutes to retrain;
`stages.0.shipped=v5` the wider shipped expert (better shapes), `stages.0.shipped=FOLDER` any trained expert.
"""

from __future__ import annotations

from pathlib import Path


def train_stage_expert(data_dir: Path, folder: Path, settings: dict) -> Path:
    """Train (or resume) the expert into `folder/model`; returns the folder LearnedExpert loads."""
    import torch

    from occmllm.recon.train import train_expert

    settings = dict(settings)
    shipped = settings.pop("shipped", False)
    if shipped:  # true: the default shipped expert; a shipped expert's name (v4, v5) or an expert folder: that one
        from occmllm.recon.experts import weights_folder
        from train.common import TrainError

        try:
            folder = weights_folder(None if shipped is True else str(shipped))
        except FileNotFoundError as error:
            raise TrainError(f"stages.0.shipped={shipped}: {error}") from None
        if not (folder / "model.safetensors").is_file():
            raise TrainError(f"stages.0.shipped={shipped}: {folder} holds no model.safetensors (expected true, "
                             "v4, v5 or a learned expert folder)")
        print(f">> stage 0: using the 3D expert {folder} (stages.0.shipped={shipped})")
        return folder
    for key in ("parts", "lr_schedule", "weight_decay", "epochs"):
        settings.pop(key, None)
    if not (Path(data_dir) / "train" / "shapes").is_dir():
        from occmllm.recon.experts import WEIGHTS

        print(f">> {data_dir}/train/shapes not found: no shapes to train the 3D expert on; using the shipped "
              f"expert {WEIGHTS}")
        return Path(WEIGHTS)
    settings.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    width = settings.pop("width", None)
    if width is not None:  # the network width (shipped experts: v4 32, v5 48); the rest of the architecture: defaults
        from occmllm.recon.model import OccupancyNetConfig

        settings["config"] = OccupancyNetConfig(width=int(width), z_per_focal=True)
    from train import tracking

    def log(values: dict, step: int) -> None:  # losses and grid IoU as expert/NAME in the run's tracker
        tracking.log(values, step, prefix="expert/")

    return Path(train_expert(data_dir, folder / "model", on_log=log, **settings))
