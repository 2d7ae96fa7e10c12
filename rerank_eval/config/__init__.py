"""The benchmarks file: its schema (`schema`), its strict reader (`reader`, through
`bounded_yaml`) and the packaged `benchmarks.yaml`."""
