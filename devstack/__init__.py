"""Development tooling, never packaged with the product: what runs the worker locally.

A real Kafka broker (`broker`), moto's Cognito emulator with seeded users (`moto`), a Cognito stub
that injects latency, quota and faults (`cognito_stub`, benchmarked by `bench_stub`) and the
end-to-end demo (`demo`, run by `make demo`). The tests import it; the wheel and the image do not.
Importing the package needs only the standard library, so `make kafka-up` runs before any
virtualenv exists.
"""
