"""libragrad_fx: rewrite a PyTorch model's backward pass into its LibraGrad form."""
