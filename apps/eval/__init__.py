"""`deghost eval`: scores pairs of folders or the runtime's own edits with deghost.training.evaluation's metrics."""
