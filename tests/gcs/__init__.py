"""A stand-in for Google Cloud Storage that TensorFlow's own GCS client talks to (see gcs_harness)."""
