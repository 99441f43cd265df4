"""Export-time tooling for Atelier: converts Whisper and Silero VAD weights into the
TorchScript modules and manifest.toml files that the Rust engine loads.

Run as ``python -m tools.export <subcommand>`` from the repository root.
"""
