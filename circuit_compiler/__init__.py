"""circuit_compiler: a pure-Python PLONKish compiler for the quantized blockwise OBS update."""
