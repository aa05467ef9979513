"""The training engine: one loop, run by every Ray Train worker, and the driver that runs it on a
local Ray instance or an existing cluster. One job per module:

- :mod:`~jem.engine.loop`: the worker function (setup, epochs, summary);
- :mod:`~jem.engine.sources`: the data (which images, their views);
- :mod:`~jem.engine.step`: one optimizer step;
- :mod:`~jem.engine.optim`: optimizers and the learning-rate schedule;
- :mod:`~jem.engine.device`: device, threads, precision and memory format;
- :mod:`~jem.engine.checkpoint`: checkpoints, resume and per-epoch reports to Ray Train;
- :mod:`~jem.engine.monitor`: the kNN monitor, DVCLive curves, progress bar, replica agreement;
- :mod:`~jem.engine.run`: the pretraining driver (TorchTrainer, run identity, storage);
- :mod:`~jem.engine.session`: the Ray lifecycle (attach or start, always shut down).

Sweeps (Ray Tune) are not part of the engine: :mod:`jem.sweep`.
"""
