"""The checkout-saga benchmark: measures the saga on the real topology against the machine's own
limits (PostgreSQL commit rate, RabbitMQ message rate). Run it with `./run bench`."""
