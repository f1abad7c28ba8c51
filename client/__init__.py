"""Python client for the roomscribe control protocol."""
