"""The tasks usnet trains: each a package with its config schema, data, loss and evaluation."""
