"""OCC-MLLM studio library: prompts, formats, the VLM backend, the 3D expert, the CoT pipeline, metrics."""

__version__ = "0.1.0"
