"""The data room: data sets (sources/), the input pipeline, evaluated examples and the caches."""
