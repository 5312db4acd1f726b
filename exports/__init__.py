"""Exporter plugins, the ONNX contract and engine-side runtimes (installed as ``agentkit_exports``)."""
