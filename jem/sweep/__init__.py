"""Ray Tune sweeps over params.yaml: a YAML search space, one Ray Train run per trial, ASHA on the
per-epoch kNN monitor, a leaderboard, and the best configuration as ``-S`` arguments.

Not part of the engine: a sweep *uses* the engine's trainer (:func:`jem.engine.run.make_trainer`).
Imports point one way: :mod:`~jem.sweep.tune` (Ray Tune) -> :mod:`~jem.sweep.leaderboard` (results)
-> :mod:`~jem.sweep.space` (the declaration).

A sweep is declared by a ``sweep`` section (see ``pipelines/sweep/params.yaml``)::

    sweep:
      num_samples: 2             # samples per grid point
      trial: {workers: 1, cpus_per_worker: 1.0, gpus_per_worker: 0.0}   # fractions allowed
      asha: {grace_period: 3, reduction_factor: 2}
      overrides: {train: {epochs: 12}}     # merged into params.yaml for every trial (the budget)
      space:                               # dotted params.yaml keys -> one sampler each
        method: {grid: [vicreg, simclr]}
        train.lr: {loguniform: [0.1, 1.0]}
        methods.simclr.temperature: {choice: [0.1, 0.2, 0.5]}

Samplers: ``grid`` (every value, times ``num_samples``), ``choice``, ``uniform``, ``loguniform``
and ``randint`` (``[low, high)``). A key under ``methods.<name>.`` only affects trials of that
method; the leaderboard and the best params leave it out for the others.

``python -m jem.sweep --set-args best_params.yaml`` prints the ``-S`` arguments that apply a
sweep's best configuration: ``dvc exp run $(python -m jem.sweep --set-args FILE)``.
"""
