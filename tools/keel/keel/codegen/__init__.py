"""Keel's code generation: `keel gen` (pipeline) and `protoc-gen-keel` (model, render)."""
