"""RL evaluation (:mod:`usnet.rl.evaluate`: the mean return at a width, the spectrum's metric
provider). The RL task itself lives in :mod:`usnet.tasks.rl`."""
