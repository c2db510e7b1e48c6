"""``pgolf export``: the challenge's records folder, with one generated ``train_gpt.py``."""
