"""The 3D reconstruction expert: one photo of a hand-held object -> the whole object's mesh (also the parts the hand
hides) and a render of the object alone, grey on black, from the input camera (the "enhanced image").

    from occmllm.recon import LearnedExpert
    rec = LearnedExpert().reconstruct("photo.jpg", views=True)
    rec.ok, rec.message, rec.render, rec.views, rec.save_glb("object.glb")

Experts: LearnedExpert (trained here: `python -m occmllm.recon.train`), FolderExpert (precomputed renders, the seed's
MOHO naming), OracleExpert (synthetic ground truth). Benchmark: `python -m benchmarks.bench_recon`.
"""
from occmllm.images import as_rgb_array
from occmllm.recon.experts import FolderExpert, LearnedExpert, OracleExpert, expert_from_spec
from occmllm.recon.reconstruction import NOTHING, Reconstruction, mesh_to_glb, nothing_reconstructed, viewer_mesh

__all__ = ["FolderExpert", "LearnedExpert", "OracleExpert", "Reconstruction", "NOTHING", "as_rgb_array", "expert_from_spec",
           "mesh_to_glb", "nothing_reconstructed", "viewer_mesh"]
