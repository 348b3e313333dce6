"""w2sweep: scalable-elicitation and weak-to-strong sweeps on Ray, from one YAML file to frontiers."""

__version__ = "0.1.0"
