"""The gRPC server: servicers, wiring, settings, the dispatcher and the Ray executor."""
