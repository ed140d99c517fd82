"""The shared Triton kernel core: each kernel beside its eager-torch reference."""
