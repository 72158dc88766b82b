"""The benchmark suite behind `make bench`: a broker, a Cognito stub and real worker processes,
measured side by side in one run. Not a test and never packaged (see the README's Benchmarks)."""
