"""Pictures of a run's images, shared by TensorBoard summaries and the `generate` tool."""
