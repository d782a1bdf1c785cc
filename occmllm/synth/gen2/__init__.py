"""Generation 2 of the synthetic data (the default of ``python -m data_tools.synth``): ObMan-faithful photos.

Modules, one job each: ``products`` (shape variants and materials per class), ``textures`` (labels, screens,
surfaces, the texture atlas), ``skin`` (the hand dressed: skin tone variation, knuckles, nails, sleeves), ``photos``
(real background photographs), ``rooms`` (structured domain-randomisation backgrounds), ``photometric`` (the
camera), and ``scene`` (``make_sample``: one sample, the same outputs and labels as generation 1).
"""
