"""Processors without torchvision: a transformers v5 processor that wants a video processor fails to build, or silently
degrades to a tokenizer, where torchvision is missing (it is, beside the CPU torch). `image_only_processor_class`
gives the same processor class without its video processor.

    >>> from transformers import InternVLProcessor
    >>> from occmllm.processors import image_only_processor_class
    >>> processor = image_only_processor_class(InternVLProcessor)(image_processor=..., tokenizer=..., chat_template=...)
"""

from __future__ import annotations

_IMAGE_ONLY: dict[type, type] = {}


def image_only_processor_class(base: type) -> type:
    """A subclass of the processor class `base` without its video processor, registered with `AutoProcessor` under
    the same config class. Needed where torchvision is missing: a transformers v5 processor that wants a video
    processor fails to build or silently degrades to a tokenizer."""
    if base in _IMAGE_ONLY:
        return _IMAGE_ONLY[base]
    import inspect

    if "video_processor" not in inspect.signature(base.__init__).parameters:
        _IMAGE_ONLY[base] = base
        return base

    # The same __init__ as `base` without `video_processor`, written out so that transformers' introspection
    # (it reads __code__.co_varnames to know which saved config keys to pass) sees every argument.
    parameters = [p for name, p in inspect.signature(base.__init__).parameters.items()
                  if name not in ("self", "video_processor")]
    named = [p for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = {p.name: (None if p.default is p.empty else p.default) for p in named}
    source = (
        f"def __init__(self, {', '.join(f'{p.name}=_defaults[{p.name!r}]' for p in named)}, **kwargs):\n"
        f"    _base.__init__(self, video_processor=None, {', '.join(f'{p.name}={p.name}' for p in named)}, **kwargs)\n"
    )
    namespace = {"_defaults": defaults, "_base": base}
    exec(source, namespace)  # noqa: S102 - generated from the base class's own signature
    __init__ = namespace["__init__"]
    subclass = type(f"{base.__name__}ImageOnly", (base,), {"__init__": __init__, "__module__": __name__})
    _IMAGE_ONLY[base] = subclass
    globals()[subclass.__name__] = subclass  # so that a saved processor_config.json names a class we can find
    try:
        from transformers import AutoProcessor
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        for model_type, name in PROCESSOR_MAPPING_NAMES.items():
            if name == base.__name__ and model_type in CONFIG_MAPPING:
                AutoProcessor.register(CONFIG_MAPPING[model_type], subclass, exist_ok=True)
    except Exception:  # noqa: BLE001 - registration is a convenience for AutoProcessor users, loading does not need it
        pass
    return subclass
