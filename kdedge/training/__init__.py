"""Training one run: the train pipeline, fitted results, the distillation loop, batching, tf.distribute, resume, the KD-or-plain selection."""
