"""The artifact container v1 (formats/artifact-v1.md): reader, writer, codecs, grids.

Imports nothing from pgolf but ``pgolf.errors``: the evaluator loads artifacts with
``load_artifact`` without pulling in the packer or the trainer.
"""

from pgolf.format.errors import FormatError
from pgolf.format.reader import Artifact, check_tokenizer, load_artifact, read_header

__all__ = ["Artifact", "FormatError", "check_tokenizer", "load_artifact", "read_header"]
