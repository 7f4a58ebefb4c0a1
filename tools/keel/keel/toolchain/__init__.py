"""Keel's proto toolchain around the generators: buf, the workspace, its image, breaking-change
checks and the writing of outputs. Nothing here generates code (that is keel.codegen)."""
