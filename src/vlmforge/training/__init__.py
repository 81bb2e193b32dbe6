"""LightningModules per family, the Trainer factory and vlmforge's callbacks."""
