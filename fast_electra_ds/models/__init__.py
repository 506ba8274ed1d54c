"""The networks and the losses they compute: building Electra encoders so ZeRO-3 partitions them
(encoder), the engine modules of each objective (pretraining, early_exit, embedding_generator), their
heads and vocabulary losses (corrective_lm, vocab_loss, sampling), the frozen auxiliary model (aux)
and the losses themselves (objectives)."""
