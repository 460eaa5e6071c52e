"""Data: clean-image sources (built-in photographs, image folders, CelebA) and (damaged, clean) loaders.

Every random choice of the training pipeline (sample order, photograph, crop, augmentation, damage) is a
pure function of (seed, epoch, sample index), so `set_epoch(e)` + `skip_batches(k)` reproduces exactly the
batches an uninterrupted run would have produced, with any number of workers or DDP ranks.

The package's parts, each importing only the ones before it: `patches` (the seed streams, crops and
augmentation), `datasets` (torch Datasets of clean patches), `sources` (built-in
photographs, folders and CelebA with their train/val/test splits: `load_source`) and `loader` (the resumable
loader of damaged pairs: `make_loader`). Protocols and error behaviour are documented in the README (Damage
tasks, Data).
"""
