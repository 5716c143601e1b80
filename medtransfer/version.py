"""The version of medtransfer: one place, which every module and the package read."""

__version__ = "0.1.0"
