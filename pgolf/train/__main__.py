"""`python -m pgolf.train`: what torchrun launches (`torchrun ... -m pgolf.train`)."""

from pgolf.train.cli import main

main()
