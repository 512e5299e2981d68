"""Formula 1: lap tables (FastF1 schema), cleaning, simulator, race models, baselines, metrics, live."""
