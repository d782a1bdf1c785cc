"""``python -m data_tools.synth --help``: the command line of the dataset generator (occmllm.synth)."""

from occmllm.synth import limit_threads

limit_threads()  # before numpy is imported by the generator
