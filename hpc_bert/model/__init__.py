"""The model: transformers' BERT / pre-LN BERT built from config with a sparse MLM head (bert),
the optimizers (optim) and a cheap CPU dropout (cpu_dropout)."""
