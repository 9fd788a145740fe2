"""wav2emo's Optuna sweeper, a Hydra plugin (Hydra only instantiates sweepers from ``hydra_plugins.*``)."""
