"""The names of the learned 3D experts that ship inside the package, and which one `learned` means, without importing
torch: for the command lines' --help, the app's menus and the spec parser (occmllm.recon.experts reads them here)."""

from __future__ import annotations

from pathlib import Path

_RECON = Path(__file__).resolve().parent / "recon"
# By name (`LearnedExpert("v5")`, `--expert learned:v5`): "v4" (width 32, in occmllm/recon/weights); "v5" (width 48,
# thin-part targets), the better shapes on generation-1 photos; "g2" (v5 fine-tuned on generation-2 photos), the one
# for generation-2 data (README); "g4" (g2 trained 8 more minutes on 58,867 fresh generation-2 photos of seed 3), the
# better shapes on generation 2, whose renders no shipped VLM has been trained to read yet.
EXPERTS = {"v4": _RECON / "weights", "v5": _RECON / "weights_v5", "g2": _RECON / "weights_g2",
           "g4": _RECON / "weights_g4"}
# What `learned` (and LearnedExpert()) means everywhere: the expert whose renders the shipped default VLM was trained
# to read (README: the shipped default model; v11, like v9 and v10 made by the `default` preset on generation-2
# photos with g2's renders. Before them, v4 for the v8 model).
DEFAULT_EXPERT = "g2"
# The one description of the learned spellings, for every --expert help.
LEARNED_HELP = (f"learned (the shipped {DEFAULT_EXPERT} expert, the app's default), learned:NAME (a shipped expert: "
                f"{', '.join(EXPERTS)}) or learned:FOLDER (a trained expert's folder)")
# The app's 3D-expert menu: the default, the other shipped experts by name, none.
EXPERT_CHOICES = ("learned", *(f"learned:{name}" for name in EXPERTS if name != DEFAULT_EXPERT), "none")
