"""Frame-level features: MFCC (iteration 1), HuBERT layers (later iterations), shard files."""
