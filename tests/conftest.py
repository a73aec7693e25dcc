import os

# Tests run on the CPU with two virtual devices so sharding code paths are exercised everywhere.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
