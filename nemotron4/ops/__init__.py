"""Fast paths that live beside the model (not inside it): each computes what the plain PyTorch code computes."""
