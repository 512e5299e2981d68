"""lapnet: recurrent neural networks from first principles to the pit wall.

One shape alphabet for the whole package (batch-first everywhere):

    B  batch size                 T  time steps (sequence length)
    D  input features per step    H  hidden size
    V  vocabulary size            L  number of stacked layers
    4H / 3H  the stacked gate blocks of an LSTM (i, f, g, o) / a GRU (r, z, n)

Layout (data flows one way: data -> model -> train -> diagnose/plot -> CLI/report):

    scratch/      the NumPy engine (never imports torch), parity-tested against torch
    models/       torch nn.Modules built on one Recurrent factory
    data/         text and synthetic sequence tasks
    race/         Formula 1 lap tables, simulator, race models and metrics
    train.py      the one training loop; checkpoint.py the one checkpoint format
    diagnostics/  hidden states, gates, gradient flow;  plots.py, report.py
    cli/          the `lapnet` command line (thin: validate, then call the library)
"""

__version__ = "0.1.0"
