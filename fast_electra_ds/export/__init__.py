"""From a checkpoint to Hugging Face model directories: consolidating the weights and writing the
directories (exporter), and the model card each one carries (model_card)."""
