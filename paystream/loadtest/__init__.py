"""Load tests: offered traffic at a fixed rate, end-to-end latency and consumer lag measured downstream."""
