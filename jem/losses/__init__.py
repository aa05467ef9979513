"""Losses: one file per family, pure term functions plus a thin ``nn.Module``."""
