"""Keel's service runtime: what generated bases and clients delegate to."""
