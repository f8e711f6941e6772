"""Analysis before training: frozen features of a checkpoint, transferability scores (`rank`) and domain
shift (`shift`)."""
