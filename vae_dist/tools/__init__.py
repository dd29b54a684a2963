"""The tools room: what generate, evaluate, export and concepts share about a trained run."""
