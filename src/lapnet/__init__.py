"""lapnet: recurrent neural networks from first principles to the pit wall.

One shape alphabet for the whole package (batch-first everywhere):

    B  batch size                 T  time steps (sequence length)
    D  input features per step    H  hidden size
    V  vocabulary size            L  number of stacked layers
    4H / 3H  the stacked gate blocks of an LSTM (i, f, g, o) / a GRU (r, z, n)

Layout (data flows one way: data -> model -> train -> diagnose/plot -> CLI/report):

    scratch/      the NumPy engine (never imports torch), parity-tested against torch
    models/       torch nn.Modules built on one Recurrent factory (and the char-LM's NumPy twin)
    data/         text and synthetic sequence tasks
    train.py      the one training loop; checkpoint.py the one checkpoint format;
                  run_dir.py output directories (checks, locks, atomic replacement);
                  distributed.py the same loop under torchrun
    experiments/  the notebook's experiments (sine, trend, adding, gradflow, gates, ...)
    diagnostics/  hidden states, gates, gradient flow, spectra, parameter counts
    text_runs.py  char-LM runs (`lapnet text`);  sampling.py temperature / top-k sampling
    series.py     your own series (`lapnet series`)
    race/         Formula 1 lap tables, simulator, race models and metrics (`lapnet race`)
    shapes.py, diagrams.py, exercise1.py   the teaching commands (`shapes`, `diagrams`, `gru-forms`)
    plots.py, report.py   figures and the HTML report;  demo.py the guided tour (`lapnet demo`)
    cli/          the `lapnet` command line (thin: validate, then call the library)
"""

__version__ = "0.1.0"
