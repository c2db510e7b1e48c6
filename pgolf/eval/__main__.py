"""`python -m pgolf.eval`: what torchrun launches (`torchrun ... -m pgolf.eval`)."""

from pgolf.eval.cli import main

main()
